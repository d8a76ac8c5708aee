"""nginx's old workers: a reload leaves each holding the long-lived connections it had, and no
more than ``old_workers`` of them linger once drained (decision 0425)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from nonstop.drivers.router.nginx import NginxRouter
from nonstop.drivers.router.nginx_process import old_workers, serving_workers, to_stop
from router.fixtures import new_router
from router.helpers import Backend, table, url, wait_for

MakeNginx = Callable[..., Awaitable[NginxRouter]]

ALL_OLD = {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}
ONE_EACH = {1: 1, 2: 1, 3: 1, 4: 1}
CASES = [
    # oldest first, old since, connections held, now, keep, drain timeout -> stopped
    ([1, 2, 3, 4], ALL_OLD, ONE_EACH, 40, 2, 30, [1, 2]),
    ([1, 2, 3, 4], ALL_OLD, {1: 50, 2: 1, 3: 1, 4: 1}, 40, 2, 30, [2, 3]),  # 1 holds 50
    ([1, 2, 3, 4], ALL_OLD, {1: 3, 2: 2, 3: 0, 4: 5}, 40, 1, 30, [1, 2, 3]),
    ([1, 2, 3, 4], ALL_OLD, ONE_EACH, 10, 2, 30, []),  # none drained long enough
    ([1, 2, 3, 4], {1: 0, 2: 20, 3: 30, 4: 35}, ONE_EACH, 40, 1, 30, [1]),  # 2 old 20 s only
    ([1, 2, 3, 4], {1: 20, 2: 0, 3: 30, 4: 35}, {2: 9}, 40, 2, 30, []),  # 1, 3 not drained
    ([1, 2, 3, 4], {1: 0, 2: 0, 3: 0, 4: 35}, {1: 5, 2: 5}, 40, 2, 30, [3]),  # 4 at a later one
    ([1, 2], {1: 0, 2: 0}, ONE_EACH, 40, 2, 30, []),  # no more than keep
    ([1, 2, 3], {}, ONE_EACH, 40, 0, 30, []),  # first seen now
    ([1, 2, 3], ALL_OLD, {}, 40, 0, 30, [1, 2, 3]),
]


@pytest.mark.parametrize(("workers", "since", "held", "now", "keep", "drain", "stopped"), CASES)
def test_which_old_workers_stop(
    workers: list[int],
    since: dict[int, float],
    held: dict[int, int],
    now: float,
    keep: int,
    drain: float,
    stopped: list[int],
) -> None:
    assert to_stop(workers, since, held, now, keep, drain) == stopped


@pytest.fixture
async def make_nginx(state_dir: Path) -> AsyncIterator[MakeNginx]:
    started: list[NginxRouter] = []

    async def make(*, drain_timeout: float, keep: int) -> NginxRouter:
        router = new_router("nginx", state_dir, drain_timeout=drain_timeout)
        assert isinstance(router, NginxRouter)
        router.tuning = dataclasses.replace(router.tuning, old_workers=keep)
        started.append(router)
        await router.start()
        return router

    yield make
    for router in started:
        await router.stop()


async def _echoes(ws: aiohttp.ClientWebSocketResponse) -> bool:
    await ws.send_str("ping")
    return (await ws.receive_str(timeout=5)).endswith(":ping")


async def _held_across_reloads(
    router: NginxRouter,
    client: aiohttp.ClientSession,
    a: Backend,
    b: Backend,
    counts: list[int],
) -> list[list[aiohttp.ClientWebSocketResponse]]:
    """For each of ``counts``, that many websockets opened before a reload: each group on its
    own old worker."""
    groups = []
    for n, count in enumerate(counts):
        groups.append([await client.ws_connect(url(router, "/ws")) for _ in range(count)])
        for ws in groups[-1]:
            assert await _echoes(ws)
        await router.apply(table(a.upstream(1 + (n + 1) % 2), b.upstream(1)))
    return groups


async def test_old_workers_within_their_drain_time_all_stay(
    make_nginx: MakeNginx,
    client: aiohttp.ClientSession,
    backends: Callable[..., Awaitable[Backend]],
) -> None:
    router = await make_nginx(drain_timeout=60.0, keep=1)
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1), b.upstream(1)))
    groups = await _held_across_reloads(router, client, a, b, [1, 1, 1])
    assert len(old_workers(router.state_dir)) == 3
    assert router.workers_retired == 0
    for ws in (ws for group in groups for ws in group):
        assert await _echoes(ws)
        await ws.close()


async def test_beyond_the_limit_the_drained_worker_holding_fewest_stops(
    make_nginx: MakeNginx,
    client: aiohttp.ClientSession,
    backends: Callable[..., Awaitable[Backend]],
) -> None:
    router = await make_nginx(drain_timeout=0.5, keep=1)
    a, b = await backends("A"), await backends("B")
    await router.apply(table(a.upstream(1), b.upstream(1)))
    (two, (one,)) = await _held_across_reloads(router, client, a, b, [2, 1])
    weights = iter(range(3, 1000))

    async def retired() -> bool:  # the check runs at each reload
        await router.apply(table(a.upstream(next(weights)), b.upstream(1)))
        return router.workers_retired > 0

    assert await wait_for(retired, deadline=20)
    assert router.workers_retired == 1
    closed = await one.receive(timeout=5)
    assert closed.type in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    )
    assert len(old_workers(router.state_dir)) == 1
    assert len(serving_workers(router.state_dir)) == 1  # none started in the stopped one's place
    for ws in two:  # the older worker holds more connections: it stays
        assert await _echoes(ws)
        await ws.close()
