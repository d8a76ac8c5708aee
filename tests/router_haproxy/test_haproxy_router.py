"""What only the HAProxy driver does: every change through the runtime API (no reload, so no
client connection is touched), servers deleted once drained, and replacing a HAProxy started
without what this version needs. The router contract is tests/router/test_router_contract.py."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from nonstop.drivers.router.haproxy import HAProxyRouter
from nonstop.drivers.router.process import ProcessRecord, kill, spawn
from nonstop.errors import RouterError
from router.fixtures import MakeRouter, again
from router.helpers import Backend, Collector, get, table, wait_for, wait_in_flight

MakeBackend = Callable[[str], Awaitable[Backend]]


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


async def test_a_request_past_the_stream_grace_is_cut_and_its_server_deleted(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """Only with ``stream_grace``: without it a leaving server keeps its sessions until they
    end (decision 0460; the contract suite pins that)."""
    router = await make_router(drain_timeout=0.5, stream_grace=0.5)
    assert isinstance(router, HAProxyRouter)
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1)))
    slow = asyncio.create_task(get(client, router, "/slow?sleep=10"))

    assert await wait_in_flight(router, a.address, 1)
    await router.apply(table(b.upstream(1)))
    # Polled past the 0.5 s grace: its sessions are shut down and the server deleted.
    assert await wait_in_flight(router, a.address, None)
    # Cut on A: HAProxy answers 502 when no header was sent yet, else the connection drops;
    # or, this being a GET that A never answered, it is retried on B (retry-on).
    try:
        answer: tuple[int, str] | None = await slow
    except aiohttp.ClientError:
        answer = None
    assert answer in (None, (200, "B")) or answer[0] == 502
    assert a.address not in await router.command("show servers state nonstop_app")


async def test_a_haproxy_without_the_probe_map_is_replaced_not_adopted(
    router: HAProxyRouter,
    client: aiohttp.ClientSession,
    backends: MakeBackend,
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
    assert router.settings.binary is not None
    argv = [str(router.settings.binary), "-db", "-f", str(router.config_file)]
    pid = spawn(argv, router.log_file, cwd=router.state_dir)
    await router._wait_spawned(pid)  # as the driver waits for one it spawned itself
    assert str(router.probe_map) not in await router.command("show map")
    earlier_haproxy = ProcessRecord.load(router.pid_file)
    assert earlier_haproxy is not None

    replacing = again(router)
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


async def test_apply_fails_when_the_listener_is_stopped(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    router = await make_router(confirm_timeout=1.0)
    assert isinstance(router, HAProxyRouter)
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    await router.command("disable frontend nonstop")  # the port stops answering
    with pytest.raises(RouterError, match="does not serve it"):
        await router.apply(table(a.upstream(2)))


async def test_the_front_health_path_says_serving_or_draining_and_a_restart_keeps_it(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """What an external load balancer checks (fleet/external.py): answered by HAProxy itself,
    never logged as a request of any release; the app's other paths are routed as before."""
    router = await make_router(front_health="/lb")
    assert isinstance(router, HAProxyRouter)
    assert await get(client, router, "/lb") == (503, "no upstream")
    a = await backends("A")
    await router.apply(table(a.upstream(1)))
    seen = Collector(router)
    assert await get(client, router, "/lb") == (200, "serving")
    assert await router.set_front(False) is True
    assert await router.set_front(False) is False
    assert await get(client, router, "/lb") == (503, "draining")
    assert await get(client, router, "/") == (200, "A")  # still routed: it is only drained
    events = await seen.until(1)  # the health answers are silent: only the app's request
    assert [(e.upstream, e.status) for e in events] == [(a.address, 200)]
    await router.stop()
    restarted = again(router)
    assert isinstance(restarted, HAProxyRouter)
    await restarted.start()
    try:
        assert restarted.front_state() == "draining"
        assert await get(client, restarted, "/lb") == (503, "draining")
        assert await restarted.set_front(True) is True
        assert await get(client, restarted, "/lb") == (200, "serving")
    finally:
        await restarted.stop()
