"""Helpers for the router tests: tiny upstream servers, an event collector, short requests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream
from nonstop.drivers.router.caddy import CaddyRouter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Backend:
    """A tiny upstream that answers its name; ``?sleep=S`` holds the response S seconds;
    ``/ws`` is a websocket that echoes ``name:message``."""

    name: str
    runner: web.AppRunner
    address: str

    def upstream(self, weight: int, release: str | None = None) -> Upstream:
        return Upstream(self.name, release or self.name, self.address, weight)

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_backend(name: str, port: int = 0) -> Backend:
    async def answer(request: web.Request) -> web.Response:
        delay = float(request.query.get("sleep", "0"))
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=name)

    async def echo(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            await socket.send_str(f"{name}:{message.data}")
        return socket

    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    host, bound = runner.addresses[0][:2]
    return Backend(name, runner, f"{host}:{bound}")


def url(router: CaddyRouter, path: str = "/") -> str:
    return f"http://{router.listen}{path}"


async def get(
    client: aiohttp.ClientSession, router: CaddyRouter, path: str = "/"
) -> tuple[int, str]:
    async with client.get(url(router, path)) as response:
        return response.status, await response.text()


def table(*upstreams: Upstream) -> RouteTable:
    return RouteTable(upstreams=upstreams)


class Collector:
    """Collects ``router.events()`` in the background into ``events``."""

    def __init__(self, router: CaddyRouter) -> None:
        self.events: list[RequestEvent] = []
        self._task = asyncio.create_task(self._run(router))

    async def _run(self, router: CaddyRouter) -> None:
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
