"""A real webhook receiver for tests: an aiohttp server on a loopback port that records every
request and answers with a status the test sets (or hangs until released)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    status: int = 200
    hold: asyncio.Event | None = None
    """When set, each request waits for this event before answering."""
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    changed: asyncio.Condition | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self.changed = asyncio.Condition()
        app = web.Application()
        app.add_routes([web.post("/hook", self._handle)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        await self._changed()
        if self.hold is not None:
            await self.hold.wait()
        if self.status < 300:
            self.received.append(Received(dict(request.headers), body))
        await self._changed()
        return web.Response(status=self.status, text="ok")

    async def _changed(self) -> None:
        assert self.changed is not None
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        assert self.changed is not None
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(condition), timeout)


class ThreadedReceiver:
    """A Receiver on its own event loop in a thread, for tests that drive a separate agent
    process synchronously."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedReceiver:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self.loop).result(10)
        return self

    @property
    def url(self) -> str:
        return self.receiver.url

    @property
    def received(self) -> list[Received]:
        return self.receiver.received

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def until(self, condition: Callable[[], bool], timeout: float = 90) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self.receiver.wait_for(condition, timeout), self.loop
        )
        future.result(timeout + 5)
