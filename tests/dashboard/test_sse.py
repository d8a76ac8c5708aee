"""Server-sent events over a real socket: a page's data only when it changed, a keep-alive
comment when quiet, a failing tick as a ``problem`` event that does not end the stream, and
the stream's end when the session ends or the dashboard closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nonstop.agent.dashboard import sse


class Page:
    """What the stream sends: a scripted list of payloads (or exceptions), the last repeated."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.stop = asyncio.Event()
        self.alive = True

    async def produce(self) -> dict[str, Any]:
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return {"page": item}


@contextlib.asynccontextmanager
async def streaming(page: Page) -> AsyncIterator[TestServer]:
    """A real server whose /stream is ``sse.serve`` over ``page``; stopped after."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse.serve(
            request, page.produce, page.stop, lambda: page.alive, interval=0.01, keepalive=0.2
        )

    app = web.Application()
    app.router.add_get("/stream", handler)
    server = TestServer(app)
    await server.start_server()
    try:
        yield server
    finally:
        page.stop.set()
        await server.close()


async def frames(server: TestServer) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) per message; ("", ": keepalive") for a comment."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.make_url("/stream")) as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream"
        name = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                yield "", line
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield name, line.removeprefix("data: ")


async def test_changes_only_then_keepalive() -> None:
    seen: list[tuple[str, str]] = []
    async with streaming(Page({"n": 1}, {"n": 1}, {"n": 2})) as server:
        async for frame in frames(server):
            seen.append(frame)
            if frame[0] == "":
                break
    # {"n": 1} twice is sent once; {"n": 2} repeated forever is sent once; then only comments.
    assert seen == [("page", '{"n":1}'), ("page", '{"n":2}'), ("", ": keepalive")]


async def test_a_failing_tick_is_a_problem_event_and_the_stream_goes_on() -> None:
    seen: list[tuple[str, Any]] = []
    async with streaming(Page(RuntimeError("disk I/O error"), {"n": 1})) as server:
        async for name, data in frames(server):
            seen.append((name, json.loads(data) if name else data))
            if name == "page":
                break
    assert seen == [("problem", {"error": "disk I/O error"}), ("page", {"n": 1})]


@pytest.mark.parametrize("end", ["session", "dashboard"])
async def test_the_stream_ends_with_the_session_or_the_dashboard(end: str) -> None:
    page = Page({"n": 1})
    seen = []
    async with streaming(page) as server:
        async for frame in frames(server):
            seen.append(frame)
            if end == "session":
                page.alive = False
            else:
                page.stop.set()
    assert seen == [("page", '{"n":1}')]  # and then the response ended
