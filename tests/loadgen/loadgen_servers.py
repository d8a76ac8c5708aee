"""Real HTTP servers on free ports for the load generator tests (fixtures in conftest.py).

Each server runs its own event loop in a thread, so the same fixture serves async tests (the
generator on the test's loop) and CLI tests (``nonstop verify`` runs ``asyncio.run`` itself).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web


class ThreadedServer:
    """An asyncio server on 127.0.0.1:<free port> in a background thread; ``stop()`` ends it."""

    def __init__(self, serve: Callable[[], Awaitable[tuple[int, Callable[[], Awaitable[None]]]]]):
        self._serve = serve
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._close: Callable[[], Awaitable[None]] | None = None
        self.port = 0

    def start(self) -> ThreadedServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self.port, self._close = future.result(timeout=10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Close the listening socket and every connection; later requests are refused."""
        if self._close is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
            self._close = None

    def shutdown(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class App:
    """Endpoints: ``/`` (200, ``X-Release`` header and body from ``release``), ``/status/N``,
    ``/every/N/S`` (status S for every Nth request, 200 otherwise), ``/slow?ms=N``."""

    def __init__(self) -> None:
        self.release = "v1"
        self.hits = 0
        self.counters: dict[str, int] = {}

    async def root(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text=f"{self.release} hello", headers={"X-Release": self.release})

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def every(self, request: web.Request) -> web.Response:
        key = request.path
        self.counters[key] = count = self.counters.get(key, 0) + 1
        if count % int(request.match_info["n"]) == 0:
            return web.Response(status=int(request.match_info["code"]), text="failed")
        return web.Response(text="ok")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("ms", "100")) / 1000)
        return web.Response(text="slow")

    async def serve(self) -> tuple[int, Callable[[], Awaitable[None]]]:
        app = web.Application()
        app.router.add_get("/", self.root)
        app.router.add_route("*", "/status/{code}", self.status)
        app.router.add_get("/every/{n}/{code}", self.every)
        app.router.add_get("/slow", self.slow)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return port, runner.cleanup


async def hang_up() -> tuple[int, Callable[[], Awaitable[None]]]:
    """Accepts a connection, reads the request, closes without a response."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.close()

    return await _serve(handle)


async def one_answer_per_connection() -> tuple[int, Callable[[], Awaitable[None]]]:
    """Answers the first request on a connection (keep-alive), then closes the connection
    without a word when the next request arrives on it: what a reloading router does to an
    idle keep-alive connection at the instant a client writes on it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the second request: no answer
        writer.close()

    return await _serve(handle)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handle: Handler) -> tuple[int, Callable[[], Awaitable[None]]]:
    """A raw TCP server on a free loopback port running ``handle``: (port, close)."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def close() -> None:
        server.close()
        await server.wait_closed()

    return port, close
