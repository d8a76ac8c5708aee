"""Helpers for the router tests: tiny upstream servers, an event collector, short requests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import web

from e2e.harness import free_port
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream


@dataclass
class Backend:
    """A tiny upstream that answers its name (GET and POST); ``?sleep=S`` holds the response
    S seconds; ``/ws`` is a websocket that echoes ``name:message``; ``/health`` answers
    ``health_status`` and counts the checks in ``health_checks``."""

    name: str
    runner: web.AppRunner
    address: str
    websockets: set[web.WebSocketResponse] = field(default_factory=set)
    health_status: int = 200
    health_checks: int = 0

    async def close_websockets(self, code: int, message: str) -> int:
        """Close every open websocket with ``code`` and ``message`` (what an app does when it
        is asked to stop); returns how many."""
        open_now = [ws for ws in self.websockets if not ws.closed]
        for ws in open_now:
            await ws.close(code=code, message=message.encode())
        return len(open_now)

    def upstream(self, weight: int, release: str | None = None) -> Upstream:
        return Upstream(self.name, release or self.name, self.address, weight)

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_backend(name: str, port: int = 0, health_status: int = 200) -> Backend:
    websockets: set[web.WebSocketResponse] = set()
    made: list[Backend] = []

    async def health(request: web.Request) -> web.Response:
        backend = made[0]
        backend.health_checks += 1
        return web.Response(status=backend.health_status, text=f"{name} health")

    async def answer(request: web.Request) -> web.Response:
        delay = float(request.query.get("sleep", "0"))
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=name)

    async def echo(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        websockets.add(socket)
        try:
            async for message in socket:
                await socket.send_str(f"{name}:{message.data}")
        finally:
            websockets.discard(socket)
        return socket

    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/health", health)
    app.router.add_get("/{tail:.*}", answer)
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    host, bound = runner.addresses[0][:2]
    made.append(Backend(name, runner, f"{host}:{bound}", websockets, health_status))
    return made[0]


class RouterUnderTest(Protocol):
    """What these helpers need of a router driver (every kind has it)."""

    listen: str

    def events(self) -> AsyncIterator[RequestEvent]: ...

    async def in_flight(self) -> dict[str, int]: ...

    async def apply(self, table: RouteTable) -> None: ...


def url(router: RouterUnderTest, path: str = "/") -> str:
    return f"http://{router.listen}{path}"


async def get(
    client: aiohttp.ClientSession, router: RouterUnderTest, path: str = "/"
) -> tuple[int, str]:
    async with client.get(url(router, path)) as response:
        return response.status, await response.text()


def table(*upstreams: Upstream) -> RouteTable:
    return RouteTable(upstreams=upstreams)


class Collector:
    """Collects ``router.events()`` in the background into ``events``."""

    def __init__(self, router: RouterUnderTest) -> None:
        self.events: list[RequestEvent] = []
        self._task = asyncio.create_task(self._run(router))

    async def _run(self, router: RouterUnderTest) -> None:
        async for event in router.events():
            self.events.append(event)

    async def until(self, count: int, deadline: float = 10.0) -> list[RequestEvent]:
        """Wait (bounded) until ``count`` events arrived; return them all."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while len(self.events) < count and loop.time() < end:
            await asyncio.sleep(0.02)
        return self.events

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# A Caddy reload can, rarely, close an idle keep-alive connection just as a request is sent on
# it, or reset a connection queued on the old listening socket (docs/router.md, "Reloads": about
# 1 in 700 reloads under 8 busy loops here). HTTP clients such as browsers and Go's retry an
# idempotent request once when the connection failed before any response; ``retry_lost=True``
# does the same and counts those retries. A retry that fails again, or any 5xx, is a failure.
CONNECTION_LOST = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectorError,
    aiohttp.ClientOSError,
)


async def load(
    client: aiohttp.ClientSession,
    router: RouterUnderTest,
    requests: int,
    workers: int = 4,
    *,
    retry_lost: bool = False,
) -> tuple[Counter[str], list[str]]:
    """``workers`` keep-alive loops sending ``requests`` GETs in all; bodies seen, failures."""
    served: Counter[str] = Counter()
    failures: list[str] = []

    async def one() -> tuple[int, str]:
        if not retry_lost:
            return await get(client, router)
        try:
            return await get(client, router)
        except CONNECTION_LOST:
            served["(retried)"] += 1
            return await get(client, router)

    async def worker(count: int) -> None:
        for _ in range(count):
            try:
                status, body = await one()
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))
                continue
            if status == 200:
                served[body] += 1
            else:
                failures.append(f"{status} {body.strip()}")
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(requests // workers) for _ in range(workers)))
    return served, failures


async def wait_for(predicate: Callable[[], Awaitable[bool]], deadline: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await predicate():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)
    return True


class FaultyUpstream:
    """An address that fails the way a broken instance does: ``refuse`` (nothing listens: a
    crashed instance), ``reset`` (accepts, reads the request, resets the connection) or
    ``hang`` (accepts and never answers: a stopped or deadlocked process)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.address = ""
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> FaultyUpstream:
        if self.kind == "refuse":
            self.address = f"127.0.0.1:{free_port()}"
            return self
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def upstream(self, weight: int = 1, release: str = "bad") -> Upstream:
        return Upstream(self.kind, release, self.address, weight)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.kind == "reset":
                await reader.read(1)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            while await reader.read(65536):  # hang: read everything, never answer
                pass
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()


async def wait_in_flight(router: RouterUnderTest, address: str, count: int | None) -> bool:
    """Wait (bounded) until ``router.in_flight()`` counts ``count`` open requests on ``address``
    (None: until the address is not listed at all). Polling is what drives a router's draining
    in the engine too (HAProxy deletes drained servers when asked)."""

    async def reached() -> bool:
        seen = await router.in_flight()
        return address not in seen if count is None else seen.get(address, 0) == count

    return await wait_for(reached)


async def load_while(
    client: aiohttp.ClientSession, router: RouterUnderTest, task: asyncio.Task[None]
) -> tuple[Counter[str], list[str]]:
    """Rounds of ``load`` (retrying lost connections) until ``task`` is done and something was
    served, so a slow machine cannot finish the load before ``task`` made its changes."""
    served: Counter[str] = Counter()
    failures: list[str] = []
    while not task.done() or not served:
        got, lost = await load(client, router, 200, retry_lost=True)
        served.update(got)
        failures.extend(lost)
    await task
    return served, failures


async def fake_admin(path: Path) -> web.AppRunner:
    """An HTTP server that answers 200 ``{}`` to everything on ``path``: not a router."""

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


async def route_to(
    router: RouterUnderTest, backends: Callable[[str], Awaitable[Backend]], name: str = "A"
) -> Backend:
    """A new upstream ``name``, and ``router`` routing all traffic to it."""
    backend = await backends(name)
    await router.apply(table(backend.upstream(1)))
    return backend
