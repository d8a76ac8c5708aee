"""CaddyRouter against a real Caddy and real upstream servers."""

from __future__ import annotations

import asyncio
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
from nonstop.drivers.router.caddy import CaddyRouter
from nonstop.errors import RouterError

from .helpers import (
    Backend,
    Collector,
    free_port,
    get,
    load,
    start_backend,
    table,
    url,
    wait_for,
)

MakeBackend = Callable[[str], Awaitable[Backend]]


async def test_no_upstreams_answers_503_with_a_clear_body(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    status, body = await get(client, router)
    assert (status, body) == (
        503,
        "503 no upstream: nonstop is not routing any instance of this service right now\n",
    )

    a = await backends("A")
    await router.apply(table(a.upstream(0)))  # weight 0 only: nothing is in the pool
    assert (await get(client, router))[0] == 503


async def test_one_upstream_serves_everything(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    assert [await get(client, router) for _ in range(5)] == [(200, "A")] * 5


async def test_applying_the_same_table_again_does_not_reload(
    router: CaddyRouter, backends: MakeBackend
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))

    def servers_started() -> int:  # Caddy logs this once per (re)load of the HTTP app
        return router.log_file.read_text().count('"msg":"server running"')

    before = servers_started()
    for _ in range(3):
        await router.apply(table(a.upstream(1)))
    assert servers_started() == before
    await router.apply(table(a.upstream(2)))  # [2] reduces to [1]: the same config again
    assert servers_started() == before
    await router.apply(table(a.upstream(0)))
    assert servers_started() == before + 1


async def test_weights_90_10_split_1000_requests_nearly_exactly(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(90), b.upstream(10)))
    served, failures = await load(client, router, 1000, workers=1, retry_lost=True)
    assert failures == []
    # Weighted round robin over [9, 1]: every run of 10 requests is 9 A and 1 B.
    assert abs(served["A"] - 900) <= 10
    assert served["A"] + served["B"] == 1000


async def test_switching_all_traffic_under_load_fails_no_request(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))

    async def switch() -> None:
        await asyncio.sleep(0.2)
        await router.apply(table(a.upstream(1), b.upstream(1)))
        await asyncio.sleep(0.2)
        await router.apply(table(a.upstream(0), b.upstream(1)))
        await asyncio.sleep(0.2)
        await router.apply(table(b.upstream(1)))

    # Load runs in rounds until the switch is over, so a slow machine cannot finish the load
    # before B ever takes traffic.
    switching = asyncio.create_task(switch())
    served: Counter[str] = Counter()
    failures: list[str] = []
    while not switching.done() or not served:
        got, lost = await load(client, router, 200, retry_lost=True)
        served.update(got)
        failures.extend(lost)
    await switching
    got, lost = await load(client, router, 200, retry_lost=True)
    served.update(got)
    failures.extend(lost)
    assert failures == []
    assert served["A"] > 0
    assert served["B"] > 0
    assert [await get(client, router) for _ in range(3)] == [(200, "B")] * 3


async def test_in_flight_request_finishes_on_a_removed_upstream(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))
    slow = asyncio.create_task(get(client, router, "/slow?sleep=1.5"))

    async def a_busy() -> bool:
        return (await router.in_flight()).get(a.address) == 1

    assert await wait_for(a_busy)
    await router.apply(table(b.upstream(1)))
    assert await get(client, router) == (200, "B")
    assert (await router.in_flight()).get(a.address) == 1  # still draining, still counted
    assert await slow == (200, "A")

    async def a_drained() -> bool:
        return (await router.in_flight()).get(a.address, 0) == 0

    assert await wait_for(a_drained)


async def test_a_websocket_outlives_the_reload_that_removes_its_upstream(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
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


async def test_a_websocket_is_closed_at_the_drain_deadline(
    state_dir: Path, caddy_binary: Path, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    router = CaddyRouter(
        state_dir, f"127.0.0.1:{free_port()}", drain_timeout=1.0, caddy_binary=caddy_binary
    )
    await router.start()
    try:
        a, b = await backends("A"), await backends("B")
        await router.apply(table(a.upstream(1)))
        async with client.ws_connect(url(router, "/ws")) as ws:
            await router.apply(table(b.upstream(1)))
            message = await ws.receive(timeout=15)  # bounded: the deadline is 1 s (+1 s delay)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)

        async def forgotten() -> bool:
            return a.address not in await router.in_flight()

        assert await wait_for(forgotten)
    finally:
        await router.stop()


async def test_a_dead_upstream_is_retried_on_the_other(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1), b.upstream(1)))
    await a.close()  # the instance died; the engine has not removed it yet
    served, failures = await load(client, router, 40, retry_lost=True)
    assert failures == []
    assert served == Counter({"B": 40})  # no reload here, so no retry either


async def test_no_live_upstream_is_a_proxy_error_naming_the_last_one_tried(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
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
    assert status == 502
    assert [(e.status, e.proxy_error) for e in events] == [(502, True)]
    assert events[0].upstream in (a.address, b.address)


async def test_request_stream_has_one_event_per_request(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    collector = Collector(router)
    try:
        assert (await get(client, router))[0] == 503
        a, b = await backends("A"), await backends("B")
        await router.apply(table(a.upstream(2, "v1"), b.upstream(1, "v2")))
        served, _ = await load(client, router, 30, workers=1, retry_lost=True)
        events = await collector.until(31)
    finally:
        await collector.close()
    assert len(events) == 31
    first, rest = events[0], events[1:]
    assert (first.upstream, first.status, first.proxy_error) == (None, 503, True)
    assert Counter(e.upstream for e in rest) == {a.address: served["A"], b.address: served["B"]}
    assert {(e.status, e.proxy_error) for e in rest} == {(200, False)}
    assert all(e.duration_ms > 0 for e in events)
    assert router.stream.dropped == 0


async def test_request_stats_fold_the_stream_per_release(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
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
        await load(client, router, 40, workers=1, retry_lost=True)

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
    assert 0 < p50 <= p100


async def test_killed_caddy_comes_back_with_the_last_table(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    old_pid = router.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    async def dead() -> bool:
        return not await router.alive()

    assert await wait_for(dead)
    collector = Collector(router)  # the same stream carries on with the new Caddy
    try:
        await router.start()
        assert router.pid not in (None, old_pid)
        assert await get(client, router) == (200, "A")
        events = await collector.until(1)
    finally:
        await collector.close()
    assert [(e.upstream, e.status) for e in events] == [(a.address, 200)]
    assert router.stream.connections == 2


async def test_a_new_agent_adopts_the_running_caddy_without_a_blip(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend, caddy_binary: Path
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    pid = router.pid

    async def restart_agent() -> CaddyRouter:
        await asyncio.sleep(0.1)
        await router.close()  # the old agent goes away; Caddy stays
        await asyncio.sleep(0.1)
        adopted = CaddyRouter(
            router.state_dir, router.listen, drain_timeout=5.0, caddy_binary=caddy_binary
        )
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
    assert events
    assert {e.upstream for e in events} == {a.address}


async def test_adopting_without_a_table_file_keeps_the_routes(
    router: CaddyRouter, client: aiohttp.ClientSession, backends: MakeBackend, caddy_binary: Path
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    await router.close()
    router.table_file.unlink()
    adopted = CaddyRouter(router.state_dir, router.listen, caddy_binary=caddy_binary)
    collector = Collector(adopted)
    try:
        await adopted.start()
        assert await get(client, adopted) == (200, "A")
        events = await collector.until(1)
    finally:
        await collector.close()
        await adopted.close()
    assert [e.upstream for e in events] == [a.address]


async def test_admin_api_is_a_private_unix_socket(router: CaddyRouter) -> None:
    assert stat.S_IMODE(router.admin_socket.stat().st_mode) == 0o600
    config = await router.config()
    assert config["admin"]["listen"] == f"unix/{router.admin_socket}|0600"
    assert await router.alive()


async def test_listen_address_in_use_is_a_clear_error(state_dir: Path, caddy_binary: Path) -> None:
    port = free_port()
    squatter = await start_backend("squatter", port)
    try:
        router = CaddyRouter(
            state_dir, f"127.0.0.1:{port}", caddy_binary=caddy_binary, start_timeout=5
        )
        with pytest.raises(
            RouterError,
            match=r"caddy exited while starting on 127\.0\.0\.1:.*address already in use",
        ):
            await router.start()
        await router.close()
    finally:
        await squatter.close()


def test_bad_listen_address_is_refused(state_dir: Path) -> None:
    with pytest.raises(RouterError, match='must be "host:port" or ":port", got \'localhost\''):
        CaddyRouter(state_dir, "localhost")


async def test_stop_ends_caddy(state_dir: Path, caddy_binary: Path) -> None:
    router = CaddyRouter(state_dir, f"127.0.0.1:{free_port()}", caddy_binary=caddy_binary)
    await router.start()
    pid = router.pid
    assert pid is not None
    await router.stop()
    assert not await router.alive()
    assert router.pid is None
    assert (
        not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    )
    assert url(router).startswith("http://127.0.0.1:")


async def test_a_deep_state_dir_puts_its_sockets_in_a_short_private_dir(
    state_dir: Path, caddy_binary: Path, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    deep = state_dir / ("d" * 50) / ("e" * 50) / "router"
    router = CaddyRouter(deep, f"127.0.0.1:{free_port()}", caddy_binary=caddy_binary)
    sockets = router.admin_socket.parent
    try:
        assert sockets != deep
        assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
        assert CaddyRouter(deep, router.listen).admin_socket == router.admin_socket  # stable
        await router.start()
        a = await backends("A")
        await router.apply(table(a.upstream(1)))
        assert await get(client, router) == (200, "A")
        assert (deep / "route-table.json").exists()
    finally:
        await router.stop()
        shutil.rmtree(sockets, ignore_errors=True)
