"""The Python SDK against a real flag service: polling, streaming kill switch, bootstrap,
server down, metrics batches."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import free_port
from flags.conftest import ServiceThread
from flags.test_client_api import wait_for
from nonstop.errors import UsageError
from nonstop.flags import Client
from nonstop.flags.client import RawFlags, api_base, revision_of

VARIANT_DOC: dict[str, Any] = {
    "version": 1,
    "features": [
        {
            "name": "banner",
            "enabled": True,
            "strategies": [{"name": "default", "parameters": {}}],
            "variants": [
                {
                    "name": "blue",
                    "weight": 1000,
                    "stickiness": "default",
                    "payload": {"type": "string", "value": "#00f"},
                }
            ],
        },
        {"name": "off", "enabled": False, "strategies": []},
    ],
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:4242", "http://127.0.0.1:4242/api"),
        ("http://127.0.0.1:4242/", "http://127.0.0.1:4242/api"),
        ("http://127.0.0.1:4242/api", "http://127.0.0.1:4242/api"),
        ("https://flags.example/api/", "https://flags.example/api"),
    ],
)
def test_api_base(url: str, expected: str) -> None:
    assert api_base(url) == expected


@pytest.mark.parametrize("url", ["127.0.0.1:4242", "ftp://host/api", "http://"])
def test_api_base_rejects(url: str) -> None:
    with pytest.raises(UsageError, match="expected http"):
        api_base(url)


@pytest.mark.parametrize(
    ("etag", "revision"),
    [('"42"', 42), ('W/"7"', 7), ("3", 3), ('"76-1a2b"', None), ("", None)],
)
def test_revision_of(etag: str, revision: int | None) -> None:
    assert revision_of(etag) == revision


def test_polling_sees_create_and_changes(server: ServiceThread, token: str) -> None:
    with Client(server.url, token, app_name="shop", refresh_interval=0.2, stream=False) as sdk:
        assert sdk.ready.wait(10)
        assert not sdk.is_enabled("checkout", {"userId": "1"})
        server.call("POST", "/v1/flags", {"name": "checkout", "percent": 100})
        assert wait_for(lambda: sdk.is_enabled("checkout", {"userId": "1"}))
        server.call("POST", "/v1/flags/checkout/rollout", {"percent": 0})
        assert wait_for(lambda: not sdk.is_enabled("checkout", {"userId": "1"}))
        assert not sdk.streaming.is_set()


def test_streaming_kill_switch_without_polling(server: ServiceThread, token: str) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 100})
    # A refresh interval of an hour: only the stream can bring the change in.
    with Client(server.url, token, refresh_interval=3600, stream=True) as sdk:
        assert sdk.streaming.wait(10)
        assert wait_for(lambda: sdk.is_enabled("checkout"))
        server.call("POST", "/v1/flags/checkout/disable")
        assert wait_for(lambda: not sdk.is_enabled("checkout"), timeout=10)
        server.call("POST", "/v1/flags", {"name": "new", "percent": 100})
        assert wait_for(lambda: sdk.is_enabled("new"), timeout=10)
        server.call("DELETE", "/v1/flags/new")
        assert wait_for(lambda: not sdk.is_enabled("new", default=False), timeout=10)
        assert sdk.is_enabled("new", default=True)  # deleted: the default again


def test_bootstrap_file_serves_while_the_server_is_down(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(VARIANT_DOC))
    down = f"http://127.0.0.1:{free_port()}"
    with Client(down, "nonstop:any", bootstrap=path, refresh_interval=0.1) as sdk:
        assert sdk.is_enabled("banner")
        assert not sdk.is_enabled("off", default=True)
        assert sdk.get_variant("banner") == {
            "name": "blue",
            "payload": {"type": "string", "value": "#00f"},
            "enabled": True,
            "feature_enabled": True,
        }
        assert not sdk.ready.is_set()


def test_server_down_gives_defaults_and_never_raises() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with Client(down, "nonstop:any", refresh_interval=0.05, request_timeout=1) as sdk:
        assert sdk.is_enabled("anything") is False
        assert sdk.is_enabled("anything", default=True) is True
        assert sdk.is_enabled("anything", {"properties": ["not", "a", "dict"]}) is False
        assert sdk.get_variant("anything") == {
            "name": "disabled",
            "enabled": False,
            "feature_enabled": False,
        }


def test_wrong_token_keeps_the_bootstrap(server: ServiceThread) -> None:
    with Client(server.url, "nonstop:wrong", bootstrap=VARIANT_DOC, refresh_interval=0.05) as sdk:
        assert sdk.is_enabled("banner")
        assert not sdk.ready.wait(0.5)


@pytest.mark.parametrize(
    ("bootstrap", "message"),
    [
        ("missing.json", "No such file"),
        ("bad.json", "not valid JSON"),
        ("list.json", 'expected a JSON object with "features"'),
    ],
)
def test_bad_bootstrap_is_a_usage_error(tmp_path: Path, bootstrap: str, message: str) -> None:
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(UsageError, match=message):
        Client("http://127.0.0.1:1", "t", bootstrap=tmp_path / bootstrap)


def test_metrics_batches_arrive(server: ServiceThread, token: str) -> None:
    server.call("PUT", "/v1/flags-document", {"document": VARIANT_DOC})
    assert server.service is not None
    store = server.service.store
    sdk = Client(server.url, token, app_name="shop", metrics_interval=0.2, stream=False)
    try:
        assert sdk.ready.wait(10)
        for _ in range(5):
            sdk.is_enabled("banner")
        assert wait_for(lambda: store.usage().get("banner", {}).get("yes") == 5)
        for _ in range(3):
            sdk.is_enabled("off")
        sdk.get_variant("banner")
    finally:
        sdk.close()  # sends the last bucket
    usage = store.usage()
    assert (usage["banner"]["yes"], usage["banner"]["no"]) == (6, 0)
    assert (usage["off"]["yes"], usage["off"]["no"]) == (0, 3)
    assert [(c["app_name"], c["sdk_version"][:14]) for c in store.clients()] == [
        ("shop", "nonstop-python")
    ]


def test_metrics_bucket_shape(server: ServiceThread) -> None:
    sdk = Client(server.url, "t", bootstrap=VARIANT_DOC, stream=False, refresh_interval=3600)
    try:
        sdk.is_enabled("banner")
        sdk.get_variant("banner")
        sdk.is_enabled("off")
        bucket, _ = sdk._pending()
        assert bucket is not None
        assert bucket["toggles"] == {
            "banner": {"yes": 2, "no": 0, "variants": {"blue": 1}},
            "off": {"yes": 0, "no": 1, "variants": {}},
        }
        assert bucket["start"] <= bucket["stop"]
        sdk._send_metrics()  # refused (wrong token): the next bucket still holds them
        sdk.is_enabled("off")
        again, _ = sdk._pending()
        assert again is not None
        assert again["toggles"]["off"] == {"yes": 0, "no": 2, "variants": {}}
    finally:
        sdk.close()


def test_an_older_revision_never_replaces_a_newer_one(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with Client(down, "t", stream=False, refresh_interval=3600) as sdk:
        on = {"version": 1, "features": [{"name": "f", "enabled": True, "strategies": []}]}
        off = {"version": 1, "features": [{"name": "f", "enabled": False, "strategies": []}]}
        assert sdk._install(off, 5, delta=False)
        assert not sdk._install(on, 4, delta=False)  # a slow poll answer from before
        assert not sdk.is_enabled("f")
        assert sdk._install(on, 6, delta=False)
        assert sdk.is_enabled("f")


def test_concurrent_evaluations_lose_no_count() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    sdk = Client(down, "t", bootstrap=VARIANT_DOC, stream=False, refresh_interval=3600)
    try:

        def evaluate() -> None:
            for _ in range(5000):
                sdk.is_enabled("banner")
                sdk.get_variant("banner")

        threads = [threading.Thread(target=evaluate) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        bucket, _ = sdk._pending()
        assert bucket is not None
        assert bucket["toggles"]["banner"] == {"yes": 40000, "no": 0, "variants": {"blue": 20000}}
    finally:
        sdk.close()


def env_flag(name: str = "prod-only") -> dict[str, Any]:
    constraint = {"contextName": "environment", "operator": "IN", "values": ["production"]}
    return {
        "name": name,
        "enabled": True,
        "strategies": [{"name": "default", "parameters": {}, "constraints": [constraint]}],
    }


PLAIN = {"name": "plain", "enabled": True, "strategies": []}


SEGMENTED = {
    "name": "segmented",
    "enabled": True,
    "strategies": [{"name": "default", "segments": [1]}],
}
CHILD = {**PLAIN, "name": "child", "dependencies": [{"feature": "prod-only"}]}
ENV_SEGMENT = {"id": 1, "constraints": env_flag()["strategies"][0]["constraints"]}


@pytest.mark.parametrize(
    ("document", "events", "reading"),
    [
        ({"version": 1, "features": [PLAIN]}, None, set()),
        ({"version": 1, "features": [PLAIN, env_flag()]}, None, {"prod-only"}),
        ({"version": 1, "features": [PLAIN, env_flag(), CHILD]}, None, {"prod-only", "child"}),
        (
            {"version": 1, "features": [PLAIN, env_flag()]},
            [{"type": "feature-removed", "featureName": "prod-only"}],
            set(),
        ),
        (
            {"version": 1, "features": [PLAIN]},
            [{"type": "feature-updated", "feature": env_flag()}],
            {"prod-only"},
        ),
        (
            {"events": [{"type": "hydration", "features": [PLAIN, SEGMENTED], "segments": []}]},
            [{"type": "segment-updated", "segment": ENV_SEGMENT}],
            {"segmented"},
        ),
        (
            {"version": 1, "features": [SEGMENTED], "segments": [ENV_SEGMENT]},
            [{"type": "segment-removed", "segmentId": 1}],
            set(),
        ),
        (
            {"version": 1, "features": [PLAIN], "segments": [ENV_SEGMENT]},
            [{"type": "hydration", "features": [], "segments": []}],
            set(),
        ),
        ({"version": 1, "features": [{**PLAIN, "name": "appName"}]}, None, {"appName"}),
    ],
)
def test_raw_flags_know_which_flags_read_the_defaults(
    document: dict[str, Any], events: list[dict[str, Any]] | None, reading: set[str]
) -> None:
    raw = RawFlags()
    raw.load(document)
    if events is not None:
        raw.apply(events)
    assert raw.reading_defaults() == reading


def test_the_clients_environment_reaches_constraints_after_a_delta() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    doc = {"version": 1, "features": [PLAIN]}
    with Client(down, "t", environment="production", bootstrap=doc, stream=False) as sdk:
        assert sdk.is_enabled("plain", {"userId": "1"})
        delta = {"events": [{"type": "feature-updated", "eventId": 1, "feature": env_flag()}]}
        assert sdk._install(delta, 1, delta=True)
        assert sdk.is_enabled("prod-only", {"userId": "1"})
        assert sdk.is_enabled("prod-only")
        assert not sdk.is_enabled("prod-only", {"environment": "staging"})
        child = {"events": [{"type": "feature-updated", "eventId": 2, "feature": CHILD}]}
        assert sdk._install(child, 2, delta=True)
        assert sdk.is_enabled("child", {"userId": "1"})  # its parent reads the environment
    with Client(down, "t", environment="staging", bootstrap=doc, stream=False) as sdk:
        assert sdk._install({"version": 1, "features": [env_flag()]}, None, delta=False)
        assert not sdk.is_enabled("prod-only", {"userId": "1"})
