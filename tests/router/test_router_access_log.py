"""Access-log lines -> RequestEvents, and the listener Caddy's net writer dials."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nonstop.drivers.router.access_log import AccessLogListener, parse_access_entry
from nonstop.drivers.router.base import RequestEvent
from nonstop.drivers.router.events import EventQueue

ACCESS = '{"level":"%s","ts":1795672057.0637443,"logger":"http.log.access.nonstop","msg":"handled request","bytes_read":0,"duration":%s,"size":7,"status":%s,"upstream_status":%s,"upstream":%s}'  # noqa: E501


def line(status: int, upstream_status: str, upstream: str, duration: str = "0.0025") -> str:
    return ACCESS % ("info", duration, status, upstream_status, upstream)


# Lines as Caddy 2.11 writes them with our config (captured, then parametrised).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # served by an upstream
            line(200, "200", '"127.0.0.1:18081"'),
            RequestEvent(1795672057.0637443, "127.0.0.1:18081", 200, 2.5, False),
        ),
        (  # the upstream itself answered 502: its error, not the router's
            line(502, "502", '"127.0.0.1:18081"'),
            RequestEvent(1795672057.0637443, "127.0.0.1:18081", 502, 2.5, False),
        ),
        (  # dial refused on every try: Caddy names the last upstream tried, none answered
            line(502, "null", '"127.0.0.1:18081"', "0.000378985"),
            RequestEvent(1795672057.0637443, "127.0.0.1:18081", 502, 0.378985, True),
        ),
        (  # reset, or a bad response: 502 naming the upstream that failed
            line(502, '""', '"127.0.0.1:18082"'),
            RequestEvent(1795672057.0637443, "127.0.0.1:18082", 502, 2.5, True),
        ),
        (  # the upstream took longer than the upstream timeout: 504 naming it
            line(504, "null", '"127.0.0.1:18082"', "30.001"),
            RequestEvent(1795672057.0637443, "127.0.0.1:18082", 504, 30001.0, True),
        ),
        (  # "no upstreams available", or our static 503 for an empty table: none tried
            line(503, "null", "null", "0.000071336"),
            RequestEvent(1795672057.0637443, None, 503, 0.071336, True),
        ),
        (  # an unset placeholder is written as an empty string: none tried either
            line(503, '""', '""', "0.000071336"),
            RequestEvent(1795672057.0637443, None, 503, 0.071336, True),
        ),
        (  # a 404 from the upstream
            line(404, "404", '"127.0.0.1:1"'),
            RequestEvent(1795672057.0637443, "127.0.0.1:1", 404, 2.5, False),
        ),
    ],
)
def test_access_lines_become_events(text: str, expected: RequestEvent) -> None:
    event = parse_access_entry(text)
    assert event is not None
    assert event.upstream == expected.upstream
    assert (event.status, event.proxy_error) == (expected.status, expected.proxy_error)
    assert event.ts == expected.ts
    assert event.duration_ms == pytest.approx(expected.duration_ms)


@pytest.mark.parametrize(
    "text",
    [
        '{"level":"info","ts":1.0,"logger":"http.log","msg":"server running","name":"nonstop"}',
        '{"msg":"handled request","ts":1.0}',  # no status
        '{"msg":"handled request","ts":"soon","status":200}',
        "[1, 2, 3]",
        "not json at all",
        "",
    ],
)
def test_other_lines_are_not_events(text: str) -> None:
    assert parse_access_entry(text) is None


@pytest.fixture
async def listener() -> AsyncIterator[AccessLogListener]:
    directory = Path(tempfile.mkdtemp(prefix="nsa-", dir="/tmp"))
    listener = AccessLogListener(directory / "events.sock", EventQueue(3))
    await listener.start()
    yield listener
    await listener.close()
    directory.rmdir()


async def send(path: Path, payload: bytes) -> None:
    _reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def settle(listener: AccessLogListener, lines: int) -> None:
    """Wait (bounded) until ``lines`` lines were handled one way or another."""
    for _ in range(500):
        c = listener.queue.counters
        if c.received + c.dropped + c.malformed >= lines:
            return
        await asyncio.sleep(0.01)


async def test_a_full_queue_drops_and_counts_instead_of_blocking(
    listener: AccessLogListener,
) -> None:
    good = line(200, "200", '"127.0.0.1:1"')
    await send(listener.path, "\n".join([good] * 5 + ["garbage", good]).encode() + b"\n")
    await settle(listener, 7)
    c = listener.queue.counters
    assert (c.received, c.dropped, c.malformed, c.connections) == (3, 3, 1, 1)
    events = listener.queue.events()
    got = [await anext(events) for _ in range(3)]
    assert {e.upstream for e in got} == {"127.0.0.1:1"}
    assert listener.queue.pending() == 0


async def test_reconnects_are_served_and_the_socket_is_private(
    listener: AccessLogListener,
) -> None:
    assert listener.path.stat().st_mode & 0o777 == 0o600
    good = line(200, "200", '"127.0.0.1:2"') + "\n"
    await send(listener.path, good.encode())
    await send(listener.path, good.encode())  # Caddy restarted and dialed again
    await settle(listener, 2)
    assert (listener.queue.counters.received, listener.queue.counters.connections) == (2, 2)


async def test_close_removes_the_socket(listener: AccessLogListener) -> None:
    await listener.close()
    assert not listener.path.exists()
