"""Release slots on a host's router and the edge's stamp (decision 0581), on real HAProxy
processes with real upstream servers: a stamped request reaches its release's slot, anything
else the table, exactly as without slots; one ``set_release`` on the edge moves the next
request; both survive an agent restart (adoption) and a HAProxy restart."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from nonstop.drivers.router.base import ReleaseSlots, Upstream
from nonstop.drivers.router.haproxy import HAProxyRouter
from nonstop.drivers.router.registry import ROUTERS
from nonstop.drivers.router.settings import RouterSettings
from nonstop.errors import RouterError
from router.fixtures import MakeRouter, again, new_router
from router.helpers import Backend, Collector, get, table, url, wait_for, wait_in_flight

MakeBackend = Callable[[str], Awaitable[Backend]]
HEADER = "X-Nonstop-Release"


async def ask(
    client: aiohttp.ClientSession, router: HAProxyRouter, release: str | None, path: str = "/"
) -> tuple[int, str]:
    """A GET carrying ``X-Nonstop-Release: release`` (none when None)."""
    headers = {} if release is None else {HEADER: release}
    async with client.get(url(router, path), headers=headers) as response:
        return response.status, await response.text()


async def slots_router(make_router: MakeRouter, **options: Any) -> HAProxyRouter:
    router = await make_router(release_slots=True, **options)
    assert isinstance(router, HAProxyRouter)
    return router


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[str | None]]]:
    """An upstream answering ``echo``; the stamp each request carried is in the list."""
    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get(HEADER))
        return web.Response(text="echo")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"{host}:{port}", seen
    await runner.cleanup()


async def test_a_stamped_request_reaches_its_slot_and_anything_else_the_table(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    router = await slots_router(make_router)
    v1, v2 = await backends("v1"), await backends("v2")
    await router.apply(table(v1.upstream(1)))
    await router.apply_slots({"v1": [v1.address], "v2": [v2.address]})
    assert await ask(client, router, None) == (200, "v1")
    assert await ask(client, router, "v2") == (200, "v2")
    assert await ask(client, router, "v1") == (200, "v1")
    assert await ask(client, router, "v9") == (200, "v1")  # no slot: the table
    assert await ask(client, router, "") == (200, "v1")
    assert router.saved_slots()["b"].release == "v2"

    # A slot with no usable server: the table, as any request (the edge's check says 503).
    await router.command(f"set server nonstop_slot_b/{v2.address} state maint")
    assert await ask(client, router, "v2") == (200, "v1")
    await router.apply_slots({"v1": [v1.address], "v2": [v2.address]})  # enabled again
    assert await ask(client, router, "v2") == (200, "v2")

    # v2 out of the slots: its map entry goes first, then its server (deleted once idle).
    await router.apply_slots({"v1": [v1.address]})
    assert await ask(client, router, "v2") == (200, "v1")
    assert await wait_in_flight(router, v2.address, None)
    assert v2.address not in await router.command("show servers state nonstop_slot_b")
    assert await router.command(f"show map {router.slots_map}") != ""


async def test_the_upstream_never_sees_the_stamp(
    make_router: MakeRouter,
    client: aiohttp.ClientSession,
    echo: tuple[str, list[str | None]],
) -> None:
    address, seen = echo
    router = await slots_router(make_router)
    await router.apply(table(Upstream("echo", "v1", address, 1)))
    await router.apply_slots({"v2": [address]})
    for release in ("v2", "v9", None):  # through the slot, through the table, unstamped
        assert await ask(client, router, release) == (200, "echo")
    assert seen == [None, None, None]


async def test_reassigning_slots_keeps_a_staying_release_where_it_is(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    """v1, v2 -> v2, v3 under a stream of v2-stamped requests: v2 keeps slot b, so not one of
    them is answered by anything but v2; v1's requests fall back to the table, v3 gets a."""
    router = await slots_router(make_router)
    v1b, v2b, v3b, app = [await backends(n) for n in ("v1", "v2", "v3", "app")]
    await router.apply(table(app.upstream(1)))
    await router.apply_slots({"v1": [v1b.address], "v2": [v2b.address]})
    served: Counter[tuple[int, str]] = Counter()
    stop = asyncio.Event()

    async def stamped() -> None:
        while not stop.is_set() or not served:
            served[await ask(client, router, "v2")] += 1

    loop = asyncio.create_task(stamped())
    await router.apply_slots({"v2": [v2b.address], "v3": [v3b.address]})
    stop.set()
    await loop
    assert set(served) == {(200, "v2")}
    assert {x: s.release for x, s in router.saved_slots().items()} == {"a": "v3", "b": "v2"}
    assert await ask(client, router, "v3") == (200, "v3")
    assert await ask(client, router, "v1") == (200, "app")
    await router.apply_slots({"v2": [v2b.address], "v3": [v3b.address]})  # idempotent
    assert await ask(client, router, "v2") == (200, "v2")


async def test_in_flight_counts_a_request_through_a_slot_after_its_server_left(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    router = await slots_router(make_router)
    v1, v2 = await backends("v1"), await backends("v2")
    await router.apply(table(v1.upstream(1)))
    await router.apply_slots({"v2": [v2.address]})
    slow = asyncio.create_task(ask(client, router, "v2", "/slow?sleep=1.5"))
    assert await wait_in_flight(router, v2.address, 1)
    await router.apply_slots({})  # v2's server leaves its slot while answering
    assert (await router.in_flight()).get(v2.address) == 1  # not idle: not drained yet
    assert await slow == (200, "v2")
    assert await wait_in_flight(router, v2.address, None)  # then deleted
    assert (await router.in_flight()).get(v1.address) == 0


async def test_the_front_health_path_answers_for_the_stamped_release(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    router = await slots_router(make_router, front_health="/lb")
    v1, v2 = await backends("v1"), await backends("v2")
    await router.apply(table(v1.upstream(1)))
    seen = Collector(router)
    assert await ask(client, router, "v2", "/lb") == (503, "release not served here")
    assert await ask(client, router, None, "/lb") == (200, "serving")
    assert await ask(client, router, "", "/lb") == (200, "serving")
    await router.apply_slots({"v2": [v2.address]})
    assert await ask(client, router, "v2", "/lb") == (200, "serving")
    assert await ask(client, router, "v1", "/lb") == (503, "release not served here")
    await router.command(f"set server nonstop_slot_a/{v2.address} state maint")
    assert await ask(client, router, "v2", "/lb") == (503, "release not served here")
    await router.set_front(False)
    assert await ask(client, router, "v2", "/lb") == (503, "draining")
    assert await ask(client, router, "v2") == (200, "v1")  # still routed (its slot is down)
    events = await seen.until(1)  # the health answers are silent: only the app's request
    assert [(e.upstream, e.status) for e in events] == [(v1.address, 200)]
    await seen.close()


async def test_apply_slots_needs_release_slots(
    make_router: MakeRouter, backends: MakeBackend
) -> None:
    router = await make_router()
    assert isinstance(router, HAProxyRouter)
    with pytest.raises(RouterError, match=r"router\.release_slots is off"):
        await router.apply_slots({"v1": []})
    with pytest.raises(RouterError, match=r"router\.release_stamp is off"):
        await router.set_release("v1")


@pytest.fixture
async def edge_dir() -> AsyncIterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nse-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def server_status(router: HAProxyRouter, server: str) -> str:
    """The ``status`` column of ``show stat`` for ``nonstop_app/server`` (UP, DOWN, ...)."""
    lines = (await router.command("show stat")).splitlines()
    columns = lines[0][2:].split(",")
    for line in lines[1:]:
        fields = line.split(",")
        if fields[columns.index("pxname")] == "nonstop_app" and fields[1] == server:
            return fields[columns.index("status")]
    return "(absent)"


async def test_the_edge_stamps_one_release_and_checks_each_host_for_it(
    make_router: MakeRouter,
    client: aiohttp.ClientSession,
    backends: MakeBackend,
    edge_dir: Path,
) -> None:
    """Edge (``release_stamp``, checking ``/lb``) in front of a host router with slots: a
    client's forged stamp never gets through; ``set_release`` moves the next request; a host
    whose slot for the stamped release is empty goes DOWN at the edge; None removes the stamp;
    a restarted edge stamps the saved release."""
    host = await slots_router(make_router, front_health="/lb")
    v1, v2 = await backends("v1"), await backends("v2")
    await host.apply(table(v1.upstream(1)))
    await host.apply_slots({"v1": [v1.address], "v2": [v2.address]})
    edge = new_router("haproxy", edge_dir, release_stamp=True, health_path="/lb", drain_timeout=5.0)
    assert isinstance(edge, HAProxyRouter)
    await edge.start()
    try:
        await edge.apply(table(Upstream("host", "v1", host.listen, 1)))
        assert await ask(client, edge, "v2") == (200, "v1")  # forged: removed
        assert edge.stamped_release() is None
        await edge.set_release("v2")
        assert edge.stamped_release() == "v2"
        assert await ask(client, edge, None) == (200, "v2")
        assert await ask(client, edge, "v1") == (200, "v2")  # forged: replaced
        await edge.set_release("v2")  # idempotent

        # The host can no longer serve v2: the edge's check (stamped v2) takes it down.
        await host.apply_slots({"v1": [v1.address]})
        assert await wait_for(lambda: _status_is(edge, host.listen, "DOWN"), deadline=15.0), (
            await server_status(edge, host.listen)
        )
        await edge.set_release("v1")  # the next check asks for v1, which the host has
        assert await wait_for(lambda: _status_is(edge, host.listen, "UP"), deadline=15.0)
        assert await ask(client, edge, None) == (200, "v1")

        await edge.set_release("v2")
        await host.apply_slots({"v1": [v1.address], "v2": [v2.address]})
        await edge.close()  # the agent exits: a new one adopts the same HAProxy
        adopted = again(edge)
        assert isinstance(adopted, HAProxyRouter)
        await adopted.start()
        assert adopted.pid == edge.pid
        assert await ask(client, adopted, None) == (200, "v2")
        await adopted.stop()
        restarted = again(edge)
        assert isinstance(restarted, HAProxyRouter)
        await restarted.start()  # a new HAProxy: the saved stamp from its first request
        assert await ask(client, restarted, "v1") == (200, "v2")
        await restarted.set_release(None)
        assert await ask(client, restarted, "v2") == (200, "v1")
        assert restarted.stamped_release() is None
        await restarted.stop()
    finally:
        await edge.stop()


async def _status_is(router: HAProxyRouter, server: str, status: str) -> bool:
    return (await server_status(router, server)).startswith(status)


async def test_adoption_and_a_restart_keep_the_slots(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    router = await slots_router(make_router)
    v1, v2 = await backends("v1"), await backends("v2")
    await router.apply(table(v1.upstream(1)))
    await router.apply_slots({"v2": [v2.address]})
    await router.close()
    adopted = again(router)
    assert isinstance(adopted, HAProxyRouter)
    await adopted.start()
    try:
        assert adopted.pid == router.pid
        assert await ask(client, adopted, "v2") == (200, "v2")
        await adopted.apply_slots({"v2": [v2.address]})
        assert await ask(client, adopted, "v2") == (200, "v2")
    finally:
        await adopted.stop()
    restarted = again(router)
    assert isinstance(restarted, HAProxyRouter)
    await restarted.start()
    try:
        assert await ask(client, restarted, "v2") == (200, "v2")
        assert await get(client, restarted) == (200, "v1")
    finally:
        await restarted.stop()


async def test_a_haproxy_started_without_slots_is_replaced_when_they_are_wanted(
    make_router: MakeRouter, client: aiohttp.ClientSession, backends: MakeBackend
) -> None:
    router = await make_router()
    assert isinstance(router, HAProxyRouter)
    v1, v2 = await backends("v1"), await backends("v2")
    await router.apply(table(v1.upstream(1)))
    old = router.pid
    await router.close()
    wanting = again(router, release_slots=True)
    assert isinstance(wanting, HAProxyRouter)
    await wanting.start()
    try:
        assert wanting.pid not in (None, old)
        await wanting.apply_slots({"v2": [v2.address]})
        assert await ask(client, wanting, "v2") == (200, "v2")
        assert await get(client, wanting) == (200, "v1")
        slotted = wanting.pid
        await wanting.close()
        unwanted = again(router, release_slots=False)
        assert isinstance(unwanted, HAProxyRouter)
        await unwanted.start()  # the slot rules are not wanted any more: replaced again
        assert unwanted.pid not in (None, slotted)
        assert await ask(client, unwanted, "v2") == (200, "v1")
        await unwanted.stop()
    finally:
        await wanting.stop()


def test_only_haproxy_offers_release_slots(state_dir: Path) -> None:
    """The optional part of the router port: Caddy and nginx do not have it."""
    offers = {
        kind: isinstance(cls(state_dir / kind, RouterSettings(listen="127.0.0.1:1")), ReleaseSlots)
        for kind, cls in ROUTERS.items()
    }
    assert offers == {"caddy": False, "haproxy": True, "nginx": False}
