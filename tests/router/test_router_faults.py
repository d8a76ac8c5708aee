"""Both routers under faults: instances that refuse, reset, hang or crash; an admin socket that
drops a call or is not a router at all; a listener that does not serve the table applied."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nonstop.drivers.router.caddy import CaddyRouter
from nonstop.drivers.router.haproxy import HAProxyRouter
from nonstop.drivers.router.process import ProcessRecord, start_time
from nonstop.errors import RouterError
from router.fixtures import MakeRouter, new_router

from .helpers import (
    Backend,
    Collector,
    FaultyUpstream,
    fake_admin,
    get,
    load_while,
    table,
    url,
)

MakeBackend = Callable[[str], Awaitable[Backend]]


@pytest.fixture
async def faulty() -> AsyncIterator[Callable[[str], Awaitable[FaultyUpstream]]]:
    made: list[FaultyUpstream] = []

    async def make(kind: str) -> FaultyUpstream:
        upstream = await FaultyUpstream(kind).start()
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        await upstream.close()


async def test_proxy_errors_name_the_upstream_that_failed(
    make_router: MakeRouter,
    client: aiohttp.ClientSession,
    faulty: Callable[[str], Awaitable[FaultyUpstream]],
) -> None:
    router = await make_router(upstream_timeout=1.0)
    collector = Collector(router)
    seen: list[tuple[str, int]] = []
    try:
        for kind in ("refuse", "reset", "hang"):
            bad = await faulty(kind)
            await router.apply(table(bad.upstream()))
            status, _ = await get(client, router)
            seen.append((kind, status))
            events = await collector.until(len(seen), deadline=30)
            last = events[-1]
            named: set[str | None] = {bad.address}
            if isinstance(router, HAProxyRouter) and kind == "refuse":
                # HAProxy forgets the server when a retry finds none left in rotation (its check
                # took the only one out meanwhile): docs/router-haproxy.md, "The request stream".
                named.add(None)
            assert last.upstream in named, kind
            assert (last.status, last.proxy_error) == (status, True), kind
        await router.apply(table())
        assert (await get(client, router))[0] == 503
        events = await collector.until(len(seen) + 1, deadline=30)
    finally:
        await collector.close()
    assert all(status in (502, 503, 504) for _, status in seen), seen
    assert [(e.upstream, e.status, e.proxy_error) for e in events[len(seen) :]] == [
        (None, 503, True)  # tried none: the only proxy error without an address
    ]


async def test_a_hung_upstream_leaves_rotation_and_requests_succeed_after(
    make_router: MakeRouter,
    client: aiohttp.ClientSession,
    backends: MakeBackend,
    faulty: Callable[[str], Awaitable[FaultyUpstream]],
) -> None:
    router = await make_router(health_path="/health", upstream_timeout=1.0)
    a, hung = await backends("A"), await faulty("hang")
    collector = Collector(router)
    try:
        await router.apply(table(a.upstream(1), hung.upstream(1)))
        # POSTs are never retried once sent, so one that reaches the hung upstream fails (504
        # naming it) until the router takes it out of rotation; then every POST is A's.
        streak, tries = 0, 0
        while streak < 10:
            tries += 1
            assert tries < 200, "the hung upstream never left rotation"
            async with client.post(url(router)) as response:
                answer = (response.status, await response.text())
            streak = streak + 1 if answer == (200, "A") else 0
        assert [await get(client, router) for _ in range(4)] == [(200, "A")] * 4
        events = await collector.until(tries + 4, deadline=30)
    finally:
        await collector.close()
    failed = [e for e in events if e.status >= 500]
    assert all((e.upstream, e.proxy_error) == (hung.address, True) for e in failed), failed


async def test_a_crashed_upstream_costs_no_request_across_the_reload_that_drops_it(
    make_router: MakeRouter,
    client: aiohttp.ClientSession,
    backends: MakeBackend,
) -> None:
    router = await make_router()
    a, b, c = await backends("A"), await backends("B"), await backends("C")
    await router.apply(table(a.upstream(1), b.upstream(1)))

    async def crash_and_replace() -> None:
        # What the agent does when an instance dies: the table changes at once, while requests
        # are still being retried off the dead one.
        await asyncio.sleep(0.3)
        await b.close()
        await router.apply(table(a.upstream(1), c.upstream(1)))
        await asyncio.sleep(0.3)
        await a.close()
        await router.apply(table(c.upstream(1)))
        await asyncio.sleep(0.3)

    served, failures = await load_while(client, router, asyncio.create_task(crash_and_replace()))
    assert failures == []
    assert served["C"] > 0
    assert [await get(client, router) for _ in range(3)] == [(200, "C")] * 3


async def test_a_socket_that_only_answers_is_not_adopted(
    kind: str,
    state_dir: Path,
    client: aiohttp.ClientSession,
    backends: MakeBackend,
) -> None:
    router = new_router(kind, state_dir)
    fake = await fake_admin(router.admin_socket)
    # The pid file names a live process with its true start time, but it is no router.
    ProcessRecord(os.getpid(), start_time(os.getpid()) or "").save(router.pid_file)
    try:
        await router.start()
        assert router.pid not in (None, os.getpid())
        a = await backends("A")
        await router.apply(table(a.upstream(1)))
        assert await get(client, router) == (200, "A")
    finally:
        await router.stop()
        await fake.cleanup()


async def _flaky_socket(path: Path, answer: bytes, drops: int) -> asyncio.AbstractServer:
    """A unix socket that closes its first ``drops`` connections unanswered, then answers."""
    seen = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        with contextlib.suppress(ConnectionError):
            await reader.readline()
            if seen > drops:
                writer.write(answer)
                await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(serve, path=str(path))


ADMIN_KINDS = ["caddy", "haproxy"]
"""The kinds driven through an admin socket (nginx is driven by signals)."""


@pytest.mark.parametrize("kind", ADMIN_KINDS)
@pytest.mark.parametrize("drops", [1, 2])
async def test_an_admin_call_dropped_once_or_twice_is_retried(
    kind: str,
    drops: int,
    state_dir: Path,
) -> None:
    router = new_router(kind, state_dir)
    if isinstance(router, CaddyRouter):
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        server = await _flaky_socket(router.admin_socket, answer, drops)
        call: Awaitable[Any] = router._admin("POST", "/load", body={})
        expected: Any = {}
    else:
        server = await _flaky_socket(router.admin_socket, b"Name: HAProxy\n", drops)
        call, expected = router.command("show info"), "Name: HAProxy"
    try:
        assert await call == expected
    finally:
        server.close()
        await server.wait_closed()
        await router.close()


@pytest.mark.parametrize("kind", ADMIN_KINDS)
async def test_an_admin_call_that_keeps_failing_is_a_clear_error(
    kind: str,
    state_dir: Path,
) -> None:
    router = new_router(kind, state_dir)
    server = await _flaky_socket(router.admin_socket, b"", drops=1000)
    try:
        call = (
            router._admin("POST", "/load", body={})
            if isinstance(router, CaddyRouter)
            else router.command("show info")
        )
        with pytest.raises(RouterError, match=r"failed 4 time\(s\) within \d+ s; last: "):
            await call
    finally:
        server.close()
        await server.wait_closed()
        await router.close()
