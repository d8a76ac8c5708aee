"""HAProxyRouter against a real HAProxy and real upstream servers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from nonstop.drivers.router.caddy import table_to_dict
from nonstop.drivers.router.caddy_config import NO_UPSTREAM_BODY
from nonstop.drivers.router.caddy_process import ProcessRecord, kill, wait_started
from nonstop.drivers.router.haproxy import HAProxyRouter
from nonstop.drivers.router.haproxy_process import last_alert, spawn
from nonstop.errors import RouterError
from router.helpers import (
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
    router: HAProxyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    assert await get(client, router) == (503, NO_UPSTREAM_BODY)
    a = await backends("A")
    await router.apply(table(a.upstream(0)))  # weight 0 only: nothing is in rotation
    assert await get(client, router) == (503, NO_UPSTREAM_BODY)
    await router.apply(table(a.upstream(1)))
    assert await get(client, router) == (200, "A")


async def test_a_keep_alive_connection_survives_every_kind_of_change(
    router: HAProxyRouter, backends: MakeBackend
) -> None:
    """The reason for this driver: no change closes a client connection (no reload)."""
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))
    host, port = router.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET / HTTP/1.1\r\nHost: {router.listen}\r\n\r\n".encode()

    async def one() -> bytes:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if b"content-length" in line.lower()
        )
        return await reader.readexactly(length)

    bodies = [await one()]
    for routes in (
        table(a.upstream(1), b.upstream(1)),
        table(a.upstream(0), b.upstream(1)),
        table(b.upstream(1)),
        table(b.upstream(3)),
        table(a.upstream(1)),
    ):
        await router.apply(routes)
        bodies.append(await one())
    writer.close()
    assert bodies[0] == b"A"
    assert bodies[1] in (b"A", b"B")  # A and B in rotation: round robin picks either
    assert bodies[2:] == [b"B", b"B", b"B", b"A"]


async def test_weights_90_10_split_1000_requests_nearly_exactly(
    router: HAProxyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(90), b.upstream(10)))
    served, failures = await load(client, router, 1000, workers=1)
    assert failures == []
    # Weighted round robin over [9, 1]: every run of 10 requests is 9 A and 1 B.
    assert abs(served["A"] - 900) <= 10
    assert served["A"] + served["B"] == 1000


async def test_switching_all_traffic_under_keep_alive_load_fails_no_request(
    router: HAProxyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))

    async def switch() -> None:
        for _ in range(3):  # A -> B -> A -> B ...: in one step and in three
            for routes in (
                table(a.upstream(0), b.upstream(1)),  # B added and A to 0 in the same apply
                table(b.upstream(1)),
                table(a.upstream(1), b.upstream(0)),
                table(a.upstream(1)),
                table(a.upstream(1), b.upstream(1)),
                table(a.upstream(0), b.upstream(1)),
                table(b.upstream(1)),
                table(b.upstream(1), a.upstream(1)),
                table(a.upstream(1)),
            ):
                await asyncio.sleep(0.05)
                await router.apply(routes)
        await router.apply(table(b.upstream(1)))

    (served, failures), _ = await asyncio.gather(load(client, router, 2000), switch())
    assert failures == []
    assert served["A"] > 0
    assert served["B"] > 0
    assert [await get(client, router) for _ in range(3)] == [(200, "B")] * 3


async def test_in_flight_request_finishes_on_a_removed_upstream(
    router: HAProxyRouter, client: aiohttp.ClientSession, backends: MakeBackend
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

    async def a_gone() -> bool:
        return a.address not in await router.in_flight()

    assert await wait_for(a_gone)
    assert a.address not in await router.command("show servers state nonstop_app")


async def test_a_websocket_outlives_the_change_that_removes_its_upstream(
    router: HAProxyRouter, client: aiohttp.ClientSession, backends: MakeBackend
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


async def test_a_request_past_the_drain_deadline_is_cut_and_its_server_deleted(
    state_dir: Path, haproxy_binary: Path, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    router = HAProxyRouter(
        state_dir, f"127.0.0.1:{free_port()}", drain_timeout=0.5, haproxy_binary=haproxy_binary
    )
    await router.start()
    try:
        a, b = await backends("A"), await backends("B")
        await router.apply(table(a.upstream(1)))
        slow = asyncio.create_task(get(client, router, "/slow?sleep=10"))

        async def a_busy() -> bool:
            return (await router.in_flight()).get(a.address) == 1

        assert await wait_for(a_busy)
        await router.apply(table(b.upstream(1)))

        async def a_gone() -> bool:
            return a.address not in await router.in_flight()

        assert await wait_for(a_gone)  # polled past the 0.5 s deadline: sessions shut down
        # Cut on A: HAProxy answers 502 when no header was sent yet, else the connection drops;
        # or, this being a GET that A never answered, it is retried on B (retry-on).
        try:
            answer: tuple[int, str] | None = await slow
        except aiohttp.ClientError:
            answer = None
        assert answer in (None, (200, "B")) or answer[0] == 502
    finally:
        await router.stop()


async def test_a_dead_upstream_is_retried_on_the_other(
    router: HAProxyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1), b.upstream(1)))
    await a.close()  # the instance died; the engine has not removed it yet
    served, failures = await load(client, router, 40)
    assert failures == []
    assert served == Counter({"B": 40})


async def test_no_live_upstream_is_a_proxy_error_in_the_stream(
    router: HAProxyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    collector = Collector(router)
    try:
        a = await backends("A")
        await router.apply(table(a.upstream(1)))
        await a.close()
        status, _ = await get(client, router)
        events = await collector.until(1)
    finally:
        await collector.close()
    assert status == 503  # connect refused, retried, then HAProxy's own 503 (state SC)
    assert [(e.upstream, e.status, e.proxy_error) for e in events] == [(None, 503, True)]


async def test_request_stream_has_one_event_per_request(
    router: HAProxyRouter, client: aiohttp.ClientSession, backends: MakeBackend
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
    assert all(e.duration_ms >= 0 for e in events)  # HAProxy logs whole milliseconds
    assert router.stream.dropped == 0


async def test_killed_haproxy_comes_back_with_the_last_table(
    router: HAProxyRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    old_pid = router.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    async def dead() -> bool:
        return not await router.alive()

    assert await wait_for(dead)
    collector = Collector(router)  # the same stream carries on with the new HAProxy
    try:
        await router.start()
        assert router.pid not in (None, old_pid)
        assert await get(client, router) == (200, "A")
        events = await collector.until(1)
    finally:
        await collector.close()
    assert [(e.upstream, e.status) for e in events] == [(a.address, 200)]
    assert router.stream.connections == 2


async def test_a_new_agent_adopts_the_running_haproxy_without_a_blip(
    router: HAProxyRouter,
    client: aiohttp.ClientSession,
    backends: MakeBackend,
    haproxy_binary: Path,
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    pid = router.pid

    async def restart_agent() -> HAProxyRouter:
        await asyncio.sleep(0.1)
        await router.close()  # the old agent goes away; HAProxy stays
        await asyncio.sleep(0.1)
        adopted = HAProxyRouter(
            router.state_dir, router.listen, drain_timeout=5.0, haproxy_binary=haproxy_binary
        )
        await adopted.start()
        return adopted

    (served, failures), adopted = await asyncio.gather(load(client, router, 800), restart_agent())
    assert failures == []
    assert served == Counter({"A": 800})
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


async def test_adopting_reapplies_a_table_saved_while_no_agent_ran(
    router: HAProxyRouter,
    client: aiohttp.ClientSession,
    backends: MakeBackend,
    haproxy_binary: Path,
) -> None:
    """The saved table wins over what HAProxy routes (an agent died between save and apply)."""
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))
    await router.close()
    router.table_file.write_text(json.dumps(table_to_dict(table(b.upstream(1)))))
    adopted = HAProxyRouter(router.state_dir, router.listen, haproxy_binary=haproxy_binary)
    await adopted.start()
    try:
        assert adopted.pid == router.pid
        assert [await get(client, adopted) for _ in range(3)] == [(200, "B")] * 3
    finally:
        await adopted.close()


async def test_adopting_without_a_table_file_keeps_the_routes(
    router: HAProxyRouter,
    client: aiohttp.ClientSession,
    backends: MakeBackend,
    haproxy_binary: Path,
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    await router.close()
    router.table_file.unlink()
    adopted = HAProxyRouter(router.state_dir, router.listen, haproxy_binary=haproxy_binary)
    await adopted.start()
    try:
        assert await get(client, adopted) == (200, "A")
    finally:
        await adopted.close()


async def test_the_admin_socket_is_private(router: HAProxyRouter) -> None:
    assert stat.S_IMODE(router.admin_socket.stat().st_mode) == 0o600
    assert await router.alive()


async def test_listen_address_in_use_is_a_clear_error(
    state_dir: Path, haproxy_binary: Path
) -> None:
    port = free_port()
    squatter = await start_backend("squatter", port)
    try:
        router = HAProxyRouter(
            state_dir, f"127.0.0.1:{port}", haproxy_binary=haproxy_binary, start_timeout=5
        )
        with pytest.raises(
            RouterError,
            match=r"haproxy exited while starting on 127\.0\.0\.1:\d+: .*cannot bind socket",
        ):
            await router.start()
        await router.close()
    finally:
        await squatter.close()


async def test_a_bad_table_is_refused_before_anything_changes(
    router: HAProxyRouter, backends: MakeBackend
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    bad = table(a.upstream(1), Backend("B", a.runner, "[::1]:80").upstream(1))
    with pytest.raises(RouterError, match=r"upstream address '\[::1\]:80': HAProxy server names"):
        await router.apply(bad)
    assert router.last_table() == table(a.upstream(1))


async def test_stop_ends_haproxy(state_dir: Path, haproxy_binary: Path) -> None:
    router = HAProxyRouter(state_dir, f"127.0.0.1:{free_port()}", haproxy_binary=haproxy_binary)
    await router.start()
    pid = router.pid
    assert pid is not None
    await router.stop()
    assert not await router.alive()
    assert router.pid is None
    assert (
        not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    )


async def test_a_deep_state_dir_puts_its_sockets_in_a_short_private_dir(
    state_dir: Path, haproxy_binary: Path, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    deep = state_dir / ("d" * 40) / ("e" * 40) / "router"  # over HAProxy's 97-byte limit
    router = HAProxyRouter(deep, f"127.0.0.1:{free_port()}", haproxy_binary=haproxy_binary)
    sockets = router.admin_socket.parent
    try:
        assert sockets != deep
        assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
        assert HAProxyRouter(deep, router.listen).admin_socket == router.admin_socket  # stable
        await router.start()
        a = await backends("A")
        await router.apply(table(a.upstream(1)))
        assert await get(client, router) == (200, "A")
        assert (deep / "route-table.json").exists()
    finally:
        await router.stop()
        shutil.rmtree(sockets, ignore_errors=True)


async def test_a_haproxy_without_the_probe_map_is_replaced_not_adopted(
    router: HAProxyRouter,
    client: aiohttp.ClientSession,
    backends: MakeBackend,
    haproxy_binary: Path,
) -> None:
    """A HAProxy started by an earlier version has no probe map: ``set map`` would fail on
    every apply, so a new HAProxy takes the listener over and the old one soft-stops."""
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    await router.close()
    old = ProcessRecord.load(router.pid_file)
    assert old is not None
    kill(old, signal.SIGKILL)
    assert await wait_for(lambda: asyncio.sleep(0, not old.running()))
    config = router.config_file.read_text()
    earlier = "\n".join(line for line in config.splitlines() if "probe" not in line.lower())
    assert earlier != config
    router.config_file.write_text(earlier + "\n")
    router.admin_socket.unlink(missing_ok=True)
    pid = spawn(haproxy_binary, router.config_file, router.log_file)
    await wait_started(
        "haproxy",
        pid,
        router.pid_file,
        lambda: router._wait_admin(0.0),
        listen=router.listen,
        admin_socket=router.admin_socket,
        log=router.log_file,
        log_error=last_alert,
        timeout=15.0,
    )
    assert str(router.probe_map) not in await router.command("show map")
    earlier_haproxy = ProcessRecord.load(router.pid_file)
    assert earlier_haproxy is not None

    replacing = HAProxyRouter(router.state_dir, router.listen, haproxy_binary=haproxy_binary)
    await replacing.start()
    try:
        assert replacing.pid not in (None, pid)
        assert await wait_for(lambda: asyncio.sleep(0, not earlier_haproxy.running()))
        assert await get(client, replacing) == (200, "A")
        b = await backends("B")
        await replacing.apply(table(b.upstream(1)))  # the probe map is there again
        assert await get(client, replacing) == (200, "B")
    finally:
        await replacing.close()
