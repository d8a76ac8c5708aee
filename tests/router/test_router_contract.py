"""The router contract: every kind in the registry (drivers/router/registry.py) against its real
router and real upstream servers. Each test runs once per kind; what only one router does (its
config, its admin interface) is tested in that driver's own files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from nonstop.drivers.metrics import UNROUTED, RequestStats
from nonstop.drivers.router.managed import ManagedRouter
from nonstop.drivers.router.table import NO_UPSTREAM_BODY, table_to_dict
from nonstop.errors import RouterError
from router.fixtures import MakeRouter, again, new_router

from .helpers import (
    Backend,
    Collector,
    get,
    load,
    load_while,
    route_to,
    start_backend,
    table,
    url,
    wait_for,
    wait_in_flight,
)

MakeBackend = Callable[[str], Awaitable[Backend]]


async def test_no_upstreams_answers_503_with_a_clear_body(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    assert await get(client, router) == (503, NO_UPSTREAM_BODY)
    a = await backends("A")
    await router.apply(table(a.upstream(0)))  # weight 0 only: nothing is in rotation
    assert await get(client, router) == (503, NO_UPSTREAM_BODY)
    await router.apply(table(a.upstream(1)))
    assert [await get(client, router) for _ in range(3)] == [(200, "A")] * 3


async def test_weights_90_10_split_1000_requests_nearly_exactly(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(90), b.upstream(10)))
    served, failures = await load(client, router, 1000, workers=1, retry_lost=True)
    assert failures == []
    # Weighted round robin over [9, 1]: every run of 10 requests is 9 A and 1 B.
    assert abs(served["A"] - 900) <= 10
    assert served["A"] + served["B"] == 1000


async def test_switching_all_traffic_under_load_fails_no_request(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))

    async def switch() -> None:
        for routes in (  # A -> B -> A -> B: in one step and in three
            table(a.upstream(0), b.upstream(1)),  # B added and A to 0 in the same apply
            table(b.upstream(1)),
            table(a.upstream(1), b.upstream(0)),
            table(a.upstream(1)),
            table(a.upstream(1), b.upstream(1)),
            table(a.upstream(0), b.upstream(1)),
            table(b.upstream(1)),
        ):
            await asyncio.sleep(0.1)
            await router.apply(routes)

    served, failures = await load_while(client, router, asyncio.create_task(switch()))
    assert failures == []
    assert served["A"] > 0
    assert served["B"] > 0
    assert [await get(client, router) for _ in range(3)] == [(200, "B")] * 3


async def test_in_flight_request_finishes_on_a_removed_upstream(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))
    slow = asyncio.create_task(get(client, router, "/slow?sleep=1.5"))

    assert await wait_in_flight(router, a.address, 1)
    await router.apply(table(b.upstream(1)))
    assert await get(client, router) == (200, "B")
    assert (await router.in_flight()).get(a.address) == 1  # still draining, still counted
    assert await slow == (200, "A")
    assert await wait_in_flight(router, a.address, 0)


async def test_a_websocket_outlives_the_change_that_removes_its_upstream(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))
    async with client.ws_connect(url(router, "/ws")) as ws:
        await ws.send_str("one")
        assert await ws.receive_str() == "A:one"
        await router.apply(table(b.upstream(1)))
        assert await get(client, router) == (200, "B")
        assert (await router.in_flight()).get(a.address) == 1  # the stream counts as in flight
        await ws.send_str("two")
        assert await ws.receive_str() == "A:two"


async def test_routing_changes_never_close_a_websocket(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """Decision 0460: neither the upstream that stays nor the one removed loses its websocket
    to a change, however long after it; the removed one's ends with the upstream's own close
    frame, passed through. The observation window is twice the drain timeout: the routers used
    to close every stream of the old config (Caddy, nginx) or of the leaving server (HAProxy)
    when it ran out."""
    router = await make_router(drain_timeout=0.5)
    a, b, c = await backends("A"), await backends("B"), await backends("C")
    await router.apply(table(a.upstream(1)))
    async with client.ws_connect(url(router, "/ws")) as on_a:
        await router.apply(table(a.upstream(1), b.upstream(1)))
        on_b = await _ws_to(client, router, "B")
        await router.apply(table(b.upstream(1)))  # A leaves
        await router.apply(table(b.upstream(2), c.upstream(1)))  # B stays, weights change
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # the window: past every old deadline
            assert (await router.in_flight()).get(a.address) == 1
            await asyncio.sleep(0.1)
        for ws, name in ((on_a, "A"), (on_b, "B")):
            await ws.send_str("still")
            assert await ws.receive_str(timeout=5) == f"{name}:still"
        assert await a.close_websockets(1001, "reconnect-after-ms=10") == 1
        closed = await on_a.receive(timeout=5)
        assert (closed.type, closed.data, closed.extra) == (
            aiohttp.WSMsgType.CLOSE,
            1001,
            "reconnect-after-ms=10",
        )
        assert await wait_in_flight(router, a.address, None)
        await on_b.close()


async def _ws_to(
    client: aiohttp.ClientSession, router: ManagedRouter, name: str
) -> aiohttp.ClientWebSocketResponse:
    """A websocket that the router's balancing put on upstream ``name`` (others are closed)."""
    for _ in range(20):
        ws = await client.ws_connect(url(router, "/ws"))
        await ws.send_str("who")
        if await ws.receive_str(timeout=5) == f"{name}:who":
            return ws
        await ws.close()
    raise AssertionError(f"no websocket landed on {name} in 20 tries")


async def test_stream_grace_closes_a_removed_upstreams_websocket(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    router = await make_router(drain_timeout=5.0, stream_grace=1.0)
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))
    async with client.ws_connect(url(router, "/ws")) as ws:
        await router.apply(table(b.upstream(1)))

        assert await wait_in_flight(router, a.address, None)  # forgotten past the grace
        message = await ws.receive(timeout=15)  # bounded: the grace is 1 s
        assert message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )


async def test_a_silent_websocket_outlives_the_upstream_timeout(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """A WebSocket that carries nothing for longer than ``upstream_timeout`` (a response's
    bound) stays open: upgraded connections have their own ``stream_idle_timeout`` (an hour by
    default). nginx's proxy_read_timeout used to close it after ``upstream_timeout``."""
    router = await make_router(upstream_timeout=1.0)
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    async with client.ws_connect(url(router, "/ws")) as ws:
        await asyncio.sleep(2.5)  # the scenario: silent for 2.5 upstream timeouts
        await ws.send_str("still")
        assert await ws.receive_str(timeout=5) == "A:still"


async def test_a_websocket_silent_past_stream_idle_timeout_is_closed(
    kind: str, make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """HAProxy (``timeout tunnel``) and nginx (``proxy_read_timeout`` of upgrade requests)
    close a WebSocket silent for ``stream_idle_timeout``, while a request slower than it but
    within ``upstream_timeout`` is answered."""
    if kind == "caddy":
        pytest.skip("Caddy has no idle timeout on streams: it never closes a silent one")
    router = await make_router(upstream_timeout=30.0, stream_idle_timeout=1.0)
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    async with client.ws_connect(url(router, "/ws")) as ws:
        message = await ws.receive(timeout=15)  # bounded: the idle timeout is 1 s
        assert message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )
    async with client.get(url(router, "/?sleep=1.5")) as response:
        assert (response.status, await response.text()) == (200, "A")


async def test_a_dead_upstream_is_retried_on_the_other(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1), b.upstream(1)))
    await a.close()  # the instance died; the engine has not removed it yet
    served, failures = await load(client, router, 40, retry_lost=True)
    assert failures == []
    assert (served["A"], served["B"]) == (0, 40)


async def test_every_upstream_failing_its_health_checks_still_serves(
    kind: str, make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """Panic mode (decision 0570): health checks that take every upstream out of rotation (on a
    busy machine: every instance too slow to answer its health path in time) must not turn
    into a 503 for every user; the router routes to all of them, by weight, as if none were
    marked. With one upstream healthy, the failing one stays out (a hung instance leaves)."""
    router = await make_router(health_path="/health")
    a, b = await backends("A"), await backends("B")
    a.health_status = b.health_status = 503
    await router.apply(table(a.upstream(1), b.upstream(1)))
    if kind != "nginx":  # nginx (open source) has no active health checks: nothing marks them
        # 2 failed checks mark an upstream down; the third has seen it down for one interval
        checked = when(lambda: min(a.health_checks, b.health_checks) >= 3)
        assert await wait_for(checked, deadline=30), (a.health_checks, b.health_checks)
    collector = Collector(router)
    try:
        served, failures = await load(client, router, 40, retry_lost=True)
        events = await collector.until(40)
    finally:
        await collector.close()
    assert failures == []
    assert (served["A"], served["B"]) == (20, 20)
    # answered by the upstreams, so charged to their releases like any other answer
    seen = Counter((e.upstream, e.status, e.proxy_error) for e in events)
    assert seen == {(a.address, 200, False): 20, (b.address, 200, False): 20}
    a.health_status = 200  # A recovers: B, still failing, is out of rotation again
    if kind != "nginx":
        seen = a.health_checks
        assert await wait_for(when(lambda: a.health_checks >= seen + 2), deadline=30)
        served, failures = await load(client, router, 20, retry_lost=True)
        assert failures == []
        assert (served["A"], served["B"]) == (20, 0)


async def test_upstreams_all_marked_down_by_failed_requests_are_still_tried(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """Panic mode for the marks failed requests leave (decision 0570): both instances refused
    a connection (restarting, a full accept queue) and are back before their mark expired;
    requests reach them at once instead of the router answering for them."""
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1), b.upstream(1)))
    await a.close()
    await b.close()
    assert (await get(client, router))[0] in (502, 503)  # both tried and refused: both marked
    back = [
        await start_backend(name, int(x.address.rsplit(":", 1)[1]))
        for name, x in [("A", a), ("B", b)]
    ]
    try:
        served, failures = await load(client, router, 20, retry_lost=True)
    finally:
        for backend in back:
            await backend.close()
    assert failures == []
    assert served["A"] + served["B"] == 20


def when(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """``check`` as the async predicate :func:`wait_for` polls."""

    async def predicate() -> bool:
        return check()

    return predicate


async def test_no_live_upstream_is_a_proxy_error_in_the_stream(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    collector = Collector(router)
    try:
        a, b = await backends("A"), await backends("B")
        await router.apply(table(a.upstream(1), b.upstream(1)))
        await a.close()
        await b.close()
        status, _ = await get(client, router)
        events = await collector.until(1)
    finally:
        await collector.close()
    assert status in (502, 503)
    assert [(e.status, e.proxy_error) for e in events] == [(status, True)]
    # The last upstream tried or, when the router marked both down first, none (RequestEvent).
    assert events[0].upstream in (a.address, b.address, None)


async def test_request_stream_has_one_event_per_request(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    collector = Collector(router)
    try:
        assert (await get(client, router))[0] == 503
        a, b = await backends("A"), await backends("B")
        await router.apply(table(a.upstream(2, "v1"), b.upstream(1, "v2")))
        served, _ = await load(client, router, 30, workers=1)
        events = await collector.until(31)
    finally:
        await collector.close()
    assert len(events) == 31
    first, rest = events[0], events[1:]
    assert (first.upstream, first.status, first.proxy_error) == (None, 503, True)
    assert Counter(e.upstream for e in rest) == {a.address: served["A"], b.address: served["B"]}
    assert served == Counter({"A": 20, "B": 10})
    assert {(e.status, e.proxy_error) for e in rest} == {(200, False)}
    assert all(e.duration_ms >= 0 for e in events)  # some routers log whole milliseconds
    assert router.stream.dropped == 0


async def test_request_stats_fold_the_stream_per_release(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    routes = table(a.upstream(3, "v1"), b.upstream(1, "v2"))
    stats = RequestStats()
    stats.observe_table(routes)
    consumer = asyncio.create_task(stats.consume(router.events()))
    try:
        since = time.time()
        await get(client, router)  # 503: nothing routed yet
        await router.apply(routes)
        await load(client, router, 40, workers=1)

        async def all_counted() -> bool:
            return sum(sum(t.status.values()) for t in stats.totals().values()) == 41

        assert await wait_for(all_counted)
    finally:
        consumer.cancel()
    until = since + 60
    v1, v2 = stats.snapshot("v1", since - 5, until), stats.snapshot("v2", since - 5, until)
    assert (v1.requests, v1.status, v1.proxy_errors) == (30, {"2xx": 30}, 0)
    assert (v2.requests, v2.status, v2.proxy_errors) == (10, {"2xx": 10}, 0)
    unrouted = stats.snapshot(UNROUTED, since - 5, until)
    assert (unrouted.requests, unrouted.status, unrouted.proxy_errors) == (1, {"5xx": 1}, 1)
    p50, p100 = v1.latency(50), v1.latency(100)
    assert p50 is not None
    assert p100 is not None
    assert 0 <= p50 <= p100  # nginx and HAProxy log whole milliseconds: a fast request is 0


async def test_a_websocket_is_one_stream_event_at_its_close_never_a_request(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """Decision 0510: the router logs an upgraded connection once, when it ends, with its
    whole life as the duration and status 101; folded, it is a stream of its upstream's
    release, not a request, not a latency. Held open past a request on the same router, so its
    event comes after that request's."""
    a = await backends("A")
    routes = table(a.upstream(1, "v1"))
    await router.apply(routes)
    stats = RequestStats()
    stats.observe_table(routes)
    collector = Collector(router)
    try:
        since = time.time()
        async with client.ws_connect(url(router, "/ws")) as ws:
            await ws.send_str("one")
            assert await ws.receive_str() == "A:one"
            assert await get(client, router) == (200, "A")
            assert await wait_for(lambda: _settled(collector, 1))
        events = await collector.until(2)
    finally:
        await collector.close()
    assert [(e.upstream, e.status) for e in events] == [(a.address, 200), (a.address, 101)]
    for event in events:
        stats.record(event)
    v1 = stats.snapshot("v1", since - 1, time.time() + 1)
    assert (v1.requests, v1.status, v1.streams) == (1, {"2xx": 1}, 1)
    assert stats.requests(since - 1, time.time() + 1) == 1


async def _settled(collector: Collector, count: int) -> bool:
    return len(collector.events) >= count


async def test_a_killed_router_comes_back_with_the_last_table(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a = await route_to(router, backends)
    old_pid = router.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    async def dead() -> bool:
        return not await router.alive()

    assert await wait_for(dead)
    collector = Collector(router)  # the same stream carries on with the new router
    try:
        await router.start()
        assert router.pid not in (None, old_pid)
        assert await get(client, router) == (200, "A")
        events = await collector.until(1)
    finally:
        await collector.close()
    assert [(e.upstream, e.status) for e in events] == [(a.address, 200)]
    assert router.stream.connections == 2


async def test_a_new_agent_adopts_the_running_router_without_a_blip(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a = await route_to(router, backends)
    pid = router.pid

    async def restart_agent() -> ManagedRouter:
        await asyncio.sleep(0.1)
        await router.close()  # the old agent goes away; the router stays
        await asyncio.sleep(0.1)
        adopted = again(router)
        await adopted.start()
        return adopted

    (served, failures), adopted = await asyncio.gather(
        load(client, router, 800, retry_lost=True), restart_agent()
    )
    assert failures == []
    assert served["A"] == 800
    assert adopted.pid == pid
    assert adopted.last_table() == table(a.upstream(1))
    collector = Collector(adopted)  # the new agent gets the request stream
    try:
        await get(client, adopted)
        events = await collector.until(1)
    finally:
        await collector.close()
        await adopted.close()
    assert events  # the rest of the load, after adoption, and the request above
    assert {e.upstream for e in events} == {a.address}


async def test_adopting_routes_a_table_saved_while_no_agent_ran(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """The saved table wins over what the router routes (an agent died between save and
    apply)."""
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))
    await router.close()
    router.table_file.write_text(json.dumps(table_to_dict(table(b.upstream(1)))))
    adopted = again(router)
    await adopted.start()
    try:
        assert adopted.pid == router.pid
        assert [await get(client, adopted) for _ in range(3)] == [(200, "B")] * 3
    finally:
        await adopted.close()


async def test_adopting_without_a_table_file_keeps_the_routes(
    router: ManagedRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a = await route_to(router, backends)
    await router.close()
    router.table_file.unlink()
    adopted = again(router)
    collector = Collector(adopted)
    try:
        await adopted.start()
        assert adopted.pid == router.pid
        assert await get(client, adopted) == (200, "A")
        events = await collector.until(1)  # the new agent gets the request stream
    finally:
        await collector.close()
        await adopted.close()
    assert [e.upstream for e in events] == [a.address]


async def test_a_bad_table_is_refused_before_anything_changes(
    router: ManagedRouter, backends: MakeBackend
) -> None:
    a = await route_to(router, backends)
    bad = table(a.upstream(1), Backend("B", a.runner, "nowhere").upstream(1))
    with pytest.raises(RouterError, match=r"upstreams\[1\] \(B\): address must be \"host:port\""):
        await router.apply(bad)
    assert router.last_table() == table(a.upstream(1))


async def test_the_admin_socket_is_private(router: ManagedRouter) -> None:
    assert stat.S_IMODE(router.admin_socket.stat().st_mode) == 0o600
    assert await router.alive()


async def test_listen_address_in_use_is_a_clear_error(kind: str, state_dir: Path) -> None:
    squatter = await start_backend("squatter")
    try:
        router = new_router(kind, state_dir, listen=squatter.address, start_timeout=5)
        with pytest.raises(
            RouterError,
            match=rf"{kind} exited while starting on 127\.0\.0\.1:\d+: .*"
            "(?i:address already in use|cannot bind socket)",
        ):
            await router.start()
        await router.close()
    finally:
        await squatter.close()


def test_a_bad_listen_address_is_refused(kind: str, state_dir: Path) -> None:
    with pytest.raises(RouterError, match='must be "host:port" or ":port", got \'localhost\''):
        new_router(kind, state_dir, listen="localhost")


async def test_stop_ends_the_router(router: ManagedRouter) -> None:
    pid = router.pid
    assert pid is not None
    await router.stop()
    assert not await router.alive()
    assert router.pid is None
    assert (
        not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    )


async def test_a_deep_state_dir_puts_its_sockets_in_a_short_private_dir(
    kind: str, state_dir: Path, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    deep = state_dir / ("d" * 40) / ("e" * 40) / "router"  # over HAProxy's 97-byte limit too
    router = new_router(kind, deep)
    sockets = router.admin_socket.parent
    try:
        assert sockets != deep
        assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
        assert again(router).admin_socket == router.admin_socket  # stable
        await router.start()
        a = await backends("A")
        await router.apply(table(a.upstream(1)))
        assert await get(client, router) == (200, "A")
        assert (deep / "route-table.json").exists()
    finally:
        await router.stop()
        shutil.rmtree(sockets, ignore_errors=True)
