"""The agent's small pure parts, from tables: request bounds, the TCP listener setting, the
client's reading of any answer, the socket path fallback and the health record."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.agent.api import MAX_DEPTH, MAX_ID, int_value, json_depth
from nonstop.agent.client import decode
from nonstop.agent.daemon import tcp_listen
from nonstop.agent.paths import UNIX_PATH_MAX, Paths
from nonstop.engine.health import Health, PendingEvent, describe
from nonstop.errors import NonstopError, StateError, UsageError


@pytest.mark.parametrize(
    ("raw", "deepest"),
    [
        (b"", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": 2}]}', 3),
        (b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 1),
        (b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 1),
        (b"[" * 100_000, 100_000),
        (b"[" * 70 + b"]" * 70, 70),
    ],
)
def test_json_depth(raw: bytes, deepest: int) -> None:
    depth = json_depth(raw)
    if deepest <= MAX_DEPTH:
        assert depth <= MAX_DEPTH
    else:
        assert depth == MAX_DEPTH + 1


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [
        ("0", 0, 10, 0),
        ("10", 0, 10, 10),
        ("11", 0, 10, None),
        ("-1", 0, 10, None),
        ("99999999999999999999", 0, MAX_ID, None),
        ("99999999999999999999999", 0, MAX_ID, None),
        (str(MAX_ID), 0, MAX_ID, MAX_ID),
        ("1e3", 0, MAX_ID, None),
        ("", 0, MAX_ID, None),
        (" 5", 0, MAX_ID, 5),
        ("0x10", 0, MAX_ID, None),
        ("5" * 5000, 0, MAX_ID, None),
    ],
)
def test_int_value_bounds(value: str, low: int, high: int, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(UsageError, match=f"limit: expected an integer from {low} to {high}"):
            int_value(value, "limit", low=low, high=high)
    else:
        assert int_value(value, "limit", low=low, high=high) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("unix:", None),
        ("unix:.nonstop/agent.sock", None),
        ("127.0.0.1:7000", ("127.0.0.1", 7000)),
        ("[::1]:7000", ("::1", 7000)),
        ("0.0.0.0:7000", "is not a loopback address"),
        ("10.1.2.3:7000", "is not a loopback address"),
        ("localhost:7000", "expected"),
        ("127.0.0.1:0", "expected"),
        ("127.0.0.1:99999", "expected"),
        ("127.0.0.1", "expected"),
        ("unix:/tmp/elsewhere.sock", "the unix socket is always"),
    ],
)
def test_agent_listen_setting(value: str | None, expected: object) -> None:
    if isinstance(expected, str):
        with pytest.raises(UsageError, match=expected):
            tcp_listen(value)
    else:
        assert tcp_listen(value) == expected


@pytest.mark.parametrize(
    ("status", "raw", "error", "message"),
    [
        (200, b'{"a": 1}', None, None),
        (200, b"", None, None),
        (
            500,
            b"500 Internal Server Error\n\nServer got itself in trouble",
            NonstopError,
            "not JSON",
        ),
        (502, b"<html>bad gateway</html>", NonstopError, "not JSON"),
        (500, b'{"error": "disk full"}', NonstopError, "the agent failed (HTTP 500): disk full"),
        (409, b'{"error": "rollout 3 is in progress"}', StateError, "rollout 3 is in progress"),
        (400, b'{"error": "limit: bad"}', UsageError, "limit: bad"),
        (413, b'{"error": "too large"}', UsageError, "too large"),
        (503, b"[1, 2]", NonstopError, "HTTP 503"),
        (200, b"[" * 100_000, NonstopError, "not JSON"),
    ],
)
def test_client_reads_any_answer(
    status: int, raw: bytes, error: type[Exception] | None, message: str | None
) -> None:
    if error is None:
        decode(status, raw)
        return
    with pytest.raises(error) as caught:
        decode(status, raw)
    assert message is not None
    assert message in str(caught.value)
    assert "Error" not in str(caught.value).replace("Internal Server Error", "")


def test_socket_path_falls_back_to_a_short_private_directory(tmp_path: Path) -> None:
    short = Paths(tmp_path / "p")
    assert short.socket == tmp_path / "p" / ".nonstop" / "agent.sock"
    deep = tmp_path / ("d" * 100) / "project"
    paths = Paths(deep)
    assert len(str(paths.state / "agent.sock")) > UNIX_PATH_MAX
    assert len(str(paths.socket)) <= UNIX_PATH_MAX
    assert paths.socket == Paths(deep).socket  # found again from the state dir alone
    assert paths.socket != Paths(tmp_path / ("e" * 100) / "project").socket
    paths.ensure()
    paths.ensure_socket_dir()
    assert paths.socket.parent.stat().st_mode & 0o777 == 0o700


def test_health_reports_a_failure_once_and_backs_off() -> None:
    now = [100.0]
    health = Health(lambda: now[0])
    assert health.backoff("router", 1.0, 10.0) == 1.0
    assert health.fail("router", "caddy exited") is True
    assert health.fail("router", "caddy exited") is False
    assert health.fail("router", "port taken") is True
    assert health.backoff("router", 1.0, 10.0) == 8.0
    for _ in range(10):
        health.fail("router", "port taken")
    assert health.backoff("router", 1.0, 10.0) == 10.0
    assert health.to_dict() == [
        {"what": "router", "why": "port taken", "since": 100.0, "failures": 13}
    ]
    assert health.ok("router") is not None
    assert not health.degraded
    assert health.ok("router") is None


def test_health_keeps_events_in_order_and_counts_what_it_drops() -> None:
    health = Health()
    limit = health.pending.maxlen
    assert limit is not None
    for n in range(limit + 3):
        health.keep(PendingEvent(float(n), "info", f"event {n}", None))
    assert health.dropped == 3
    assert health.pending[0].message == "event 3"


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (
            OSError(28, "No space left on device", "/x/state.db"),
            "No space left on device: /x/state.db",
        ),
        (RuntimeError("boom"), "boom"),
        (KeyError(), "unexpected failure"),
    ],
)
def test_describe_never_names_a_class(exc: BaseException, text: str) -> None:
    assert describe(exc) == text


def test_a_reason_is_printed_once() -> None:
    from nonstop.cli.progress import _once

    shown: set[str] = set()
    reason = "not ready after 1s: last probe: status 503 | last output: listening on :1"
    lines = [
        _once(f"v2-1: {reason}", shown),
        _once(f"v2-1 did not become ready: {reason}; aborted", shown),
        _once(f"rollout 2 aborted: v2-1 did not become ready: {reason}", shown),
        _once("v2-2 ready at 127.0.0.1:9", shown),
    ]
    assert sum(line.count(reason) for line in lines) == 1
    assert lines[1] == "v2-1 did not become ready: (see above); aborted"
    assert lines[3] == "v2-2 ready at 127.0.0.1:9"


async def test_explain_turns_a_refused_unix_socket_into_words(tmp_path: Path) -> None:
    """A real connection to a unix socket nobody listens on: aiohttp's connector error reads
    as a sentence naming the socket, and its doctests hold."""
    import doctest
    import socket

    import aiohttp

    import nonstop.errors
    from nonstop.errors import explain

    assert doctest.testmod(nonstop.errors).failed == 0
    path = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # bound, never listening: connecting is refused
    said = []
    for where in (path, tmp_path / "missing.sock"):
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(where))) as http:
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await http.get("http://router/config")
        said.append(explain(caught.value, f"router admin socket {where}"))
    assert said == [
        f"router admin socket {path} refused the connection",
        f"router admin socket {tmp_path / 'missing.sock'} does not exist",
    ]
