"""The Unleash client API on a real socket: features with ETag/304, token auth, metrics,
register, the SSE stream; and the official UnleashClient (6.x) against it."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flags.conftest import FakeErrors, ServiceThread


def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={**headers, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_features_etag_and_304(server: ServiceThread, token: str) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 25})
    status, headers, body = get(f"{server.url}/client/features", {"Authorization": token})
    assert status == 200
    doc = json.loads(body)
    assert [f["name"] for f in doc["features"]] == ["checkout"]
    strategy = doc["features"][0]["strategies"][0]
    assert strategy["name"] == "flexibleRollout"
    assert strategy["parameters"] == {
        "rollout": "25",
        "stickiness": "default",
        "groupId": "checkout",
    }
    etag = headers["ETag"]

    status, again, body = get(
        f"{server.url}/client/features", {"Authorization": token, "If-None-Match": etag}
    )
    assert (status, body, again["ETag"]) == (304, b"", etag)

    server.call("POST", "/v1/flags/checkout/disable")
    status, headers, body = get(
        f"{server.url}/client/features", {"Authorization": token, "If-None-Match": etag}
    )
    assert status == 200
    assert headers["ETag"] != etag
    assert json.loads(body)["features"][0]["enabled"] is False


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("", ["checkout", "checkout-v2", "search"]),
        ("?namePrefix=checkout", ["checkout", "checkout-v2"]),
        ("?project=default", ["checkout", "checkout-v2", "search"]),
        ("?project=other", []),
        ("?project=default&namePrefix=se", ["search"]),
    ],
)
def test_features_filters_like_unleash(
    server: ServiceThread, token: str, query: str, names: list[str]
) -> None:
    for name in ("checkout", "checkout-v2", "search"):
        server.call("POST", "/v1/flags", {"name": name})
    status, _, body = get(f"{server.url}/client/features{query}", {"Authorization": token})
    assert status == 200
    assert [f["name"] for f in json.loads(body)["features"]] == names


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "nonstop:wrong"}, 401),
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer nonstop:wrong"}, 401),
    ],
)
def test_missing_or_wrong_token_is_401(
    server: ServiceThread, token: str, headers: dict[str, str], status: int
) -> None:
    got, _, body = get(f"{server.url}/client/features", headers)
    assert got == status
    assert "client token" in json.loads(body)["error"]
    got, _ = post(f"{server.url}/client/metrics", {"bucket": {"toggles": {}}}, headers)
    assert got == status


def test_token_is_stored_hashed_and_listed_by_name(server: ServiceThread, token: str) -> None:
    rows = server.call("GET", "/v1/flags-tokens")
    assert [r["name"] for r in rows] == ["tests"]
    db = (server.paths.state / "state.db").read_bytes()
    assert token.encode() not in db
    status, _, _ = get(f"{server.url}/client/features", {"Authorization": f"Bearer {token}"})
    assert status == 200


def test_metrics_and_register_are_accepted(server: ServiceThread, token: str) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 50})
    auth = {"Authorization": token}
    register = {"appName": "shop", "instanceId": "web-1", "sdkVersion": "x:1", "strategies": []}
    assert post(f"{server.url}/client/register", register, auth)[0] == 202
    bucket = {
        "start": "2026-01-01T00:00:00Z",
        "stop": "2026-01-01T00:01:00Z",
        "toggles": {"checkout": {"yes": 3, "no": 4, "variants": {}}},
    }
    body = {"appName": "shop", "instanceId": "web-1", "bucket": bucket}
    assert post(f"{server.url}/client/metrics", body, auth)[0] == 202
    assert post(f"{server.url}/client/metrics", body, auth)[0] == 202
    shown = server.call("GET", "/v1/flags/checkout")
    assert (shown["usage"]["yes"], shown["usage"]["no"]) == (6, 8)
    assert server.service is not None
    assert [c["app_name"] for c in server.service.store.clients()] == ["shop"]


def test_metrics_totals_stay_whole_numbers(server: ServiceThread, token: str) -> None:
    """Two posts of the largest count add up exactly; counts for flags the server does not
    serve are not kept."""
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 50})
    auth = {"Authorization": token}
    big = 2**31 - 1
    body = {"bucket": {"toggles": {"checkout": {"yes": big}, "nosuchflag": {"yes": 1}}}}
    for _ in range(2):
        status, text = post(f"{server.url}/client/metrics", body, auth)
        assert (status, json.loads(text)) == (202, {"accepted": 1})
    usage = server.call("GET", "/v1/flags/checkout")["usage"]
    assert usage["yes"] == 2 * big
    assert isinstance(usage["yes"], int)
    assert server.service is not None
    assert set(server.service.store.usage()) == {"checkout"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"bucket": {"toggles": []}}, '"bucket.toggles" must be an object'),
        ({"bucket": {"toggles": {"a": {"yes": -1}}}}, 'bucket.toggles["a"].yes: expected a count'),
        ({"bucket": {"toggles": {"a": {"no": "2"}}}}, 'bucket.toggles["a"].no: expected a count'),
        ({"bucket": {"toggles": {"a": {"yes": 10**29}}}}, '["a"].yes: expected a count 0..'),
        ({"bucket": {"toggles": {"a": {"yes": 2**63 - 1}}}}, '["a"].yes: expected a count 0..'),
        ({"bucket": {"toggles": {"a": {"yes": True}}}}, '["a"].yes: expected a count 0..'),
        ({"bucket": {"toggles": {"a": {"yes": 1.5}}}}, '["a"].yes: expected a count 0..'),
        ({"bucket": {"toggles": {"a": 3}}}, '["a"]: expected an object with yes/no counts'),
        (
            {"bucket": {"toggles": {f"f{i}": {} for i in range(10_001)}}},
            "at most 10000 flags per post",
        ),
    ],
)
def test_bad_metrics_are_400(
    server: ServiceThread, token: str, body: dict[str, Any], message: str
) -> None:
    status, text = post(f"{server.url}/client/metrics", body, {"Authorization": token})
    assert status == 400
    assert message in json.loads(text)["error"]


def read_sse(response: Any) -> tuple[str, int, dict[str, Any]]:
    event, event_id, data = "", -1, ""
    while True:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and event:
            return event, event_id, json.loads(data)


def test_streaming_sends_hydration_then_deltas(server: ServiceThread, token: str) -> None:
    server.call("POST", "/v1/flags", {"name": "a", "percent": 10})
    request = urllib.request.Request(
        f"{server.url}/client/streaming", headers={"Authorization": token}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        event, first_id, data = read_sse(response)
        assert event == "unleash-connected"
        (hydration,) = data["events"]
        assert hydration["type"] == "hydration"
        assert [f["name"] for f in hydration["features"]] == ["a"]

        server.call("POST", "/v1/flags/a/enable")  # already on: nothing to send
        server.call("POST", "/v1/flags/a/disable")
        event, event_id, data = read_sse(response)
        assert (event, event_id) == ("unleash-updated", first_id + 2)
        (update,) = data["events"]
        assert update["type"] == "feature-updated"
        assert (update["feature"]["name"], update["feature"]["enabled"]) == ("a", False)

        server.call("DELETE", "/v1/flags/a")
        event, _, data = read_sse(response)
        assert data["events"] == [
            {
                "type": "feature-removed",
                "eventId": first_id + 3,
                "featureName": "a",
                "project": "default",
            }
        ]


def test_official_unleash_client_sees_create_and_later_changes(
    server: ServiceThread, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    from UnleashClient import UnleashClient

    caplog.set_level(logging.CRITICAL, logger="UnleashClient")
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 100})
    server.call("POST", "/v1/flags", {"name": "search", "percent": 0})
    sdk = UnleashClient(
        url=server.url,
        app_name="shop",
        instance_id="test-1",
        refresh_interval=1,
        metrics_interval=1,
        custom_headers={"Authorization": token},
        cache_directory=str(server.paths.state / "unleash-cache"),
    )
    sdk.initialize_client()
    try:
        ctx = {"userId": "42"}
        assert wait_for(lambda: sdk.is_enabled("checkout", ctx))
        assert not sdk.is_enabled("search", ctx)

        server.call("POST", "/v1/flags/checkout/disable")  # kill switch
        assert wait_for(lambda: not sdk.is_enabled("checkout", ctx))
        server.call("POST", "/v1/flags/search/rollout", {"percent": 100})
        assert wait_for(lambda: sdk.is_enabled("search", ctx))
        server.call("POST", "/v1/flags", {"name": "later", "percent": 100})
        assert wait_for(lambda: sdk.is_enabled("later", ctx))

        assert server.service is not None
        store = server.service.store
        assert wait_for(lambda: any(c["app_name"] == "shop" for c in store.clients()))
        assert wait_for(lambda: "checkout" in store.usage())
    finally:
        sdk.destroy()


def test_port_in_use_logs_an_error_and_the_rest_keeps_working(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = ServiceThread(tmp_path, f"127.0.0.1:{port}", FakeErrors()).start()
        try:
            assert proc.service is not None
            assert proc.service.port is None
            ((_, message),) = [e for e in proc.events if e[0] == "error"]
            assert message.startswith(
                f"flags: cannot serve the client API on 127.0.0.1:{port} (address already in use"
            )
            assert proc.call("POST", "/v1/flags", {"name": "still-works"})["name"] == "still-works"
        finally:
            proc.stop()


def test_official_unleash_client_in_streaming_mode(
    server: ServiceThread, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    from UnleashClient import UnleashClient

    caplog.set_level(logging.CRITICAL, logger="UnleashClient")
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 100})
    sdk = UnleashClient(
        url=server.url,
        app_name="shop",
        instance_id="test-2",
        refresh_interval=3600,  # only the stream can bring changes in
        disable_metrics=True,
        custom_headers={"Authorization": token},
        cache_directory=str(server.paths.state / "unleash-cache-2"),
        experimental_mode={"type": "streaming"},
    )
    sdk.initialize_client()
    try:
        assert wait_for(lambda: sdk.is_enabled("checkout", {"userId": "1"}))
        server.call("POST", "/v1/flags/checkout/disable")
        assert wait_for(lambda: not sdk.is_enabled("checkout", {"userId": "1"}))
        server.call("POST", "/v1/flags", {"name": "later", "percent": 100})
        assert wait_for(lambda: sdk.is_enabled("later", {"userId": "1"}))
        server.call("DELETE", "/v1/flags/later")
        assert wait_for(lambda: not sdk.is_enabled("later", {"userId": "1"}))
    finally:
        sdk.destroy()
