"""Fixtures: a real FlagService on real sockets, run in a thread with its own event loop.

The admin routes sit behind the agent's own auth middleware on ``.nonstop/agent.sock`` with a
token in ``.nonstop/token``, exactly as the agent mounts them, so `AgentClient` and the CLI
(``NONSTOP_PROJECT``) talk to it unchanged; the Unleash client API listens on a free TCP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from e2e.harness import free_port
from nonstop.agent.api import auth_middleware
from nonstop.agent.client import AgentClient
from nonstop.agent.paths import Paths
from nonstop.config.schema import FlagsConfig
from nonstop.flags.service import FlagService


@dataclass
class FakeErrors:
    """The service's error_rate input: (errors, requests) since a time, set by the test."""

    errors: int = 0
    requests: int = 0
    calls: list[float] = field(default_factory=list)

    def __call__(self, since: float) -> tuple[int, int]:
        self.calls.append(since)
        return self.errors, self.requests


class ServiceThread:
    def __init__(self, root: Path, listen: str | None, errors: FakeErrors) -> None:
        self.paths = Paths(root)
        self.listen = listen
        self.errors = errors
        self.events: list[tuple[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.service: FlagService | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))
        self.client = AgentClient(self.paths, timeout=10)

    @property
    def url(self) -> str:
        assert self.service is not None
        assert self.service.port is not None
        return f"http://127.0.0.1:{self.service.port}/api"

    def start(self) -> ServiceThread:
        self._thread.start()
        assert self._ready.wait(10), "flag service did not start"
        return self

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        token = self.paths.read_or_create_token()
        config = FlagsConfig(listen=self.listen, refresh_interval=1.0)
        service = FlagService(
            self.paths.state, config, self.errors, lambda lvl, msg: self.events.append((lvl, msg))
        )
        self.service = service
        app = web.Application(middlewares=[auth_middleware(token, frozenset())])
        app.add_routes(service.admin_routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.UnixSite(runner, str(self.paths.socket)).start()
        await service.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await service.close()
            await runner.cleanup()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.call(method, path, body)

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        with contextlib.suppress(RuntimeError):
            self.loop.close()


@pytest.fixture
def fake_errors() -> FakeErrors:
    return FakeErrors()


@pytest.fixture
def server(tmp_path: Path, fake_errors: FakeErrors) -> Iterator[ServiceThread]:
    proc = ServiceThread(tmp_path, f"127.0.0.1:{free_port()}", fake_errors).start()
    yield proc
    proc.stop()


@pytest.fixture
def token(server: ServiceThread) -> str:
    data = server.call("POST", "/v1/flags-tokens", {"name": "tests"})
    return str(data["token"])
