"""Real Caddy, real upstream servers on free ports, a state directory under /tmp.

The state directory is made with a short name because unix socket paths are limited to 107
bytes and pytest's tmp_path can be longer than that.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from conftest import require_binary
from nonstop.drivers.router.caddy import CaddyRouter

from .helpers import Backend, free_port, start_backend


@pytest.fixture
def caddy_binary() -> Path:
    return Path(require_binary("caddy", str(Path(sys.prefix) / "bin" / "caddy")))


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nsr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[str], Awaitable[Backend]]]:
    started: list[Backend] = []

    async def make(name: str) -> Backend:
        backend = await start_backend(name)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        await backend.close()


@pytest.fixture
async def router(state_dir: Path, caddy_binary: Path) -> AsyncIterator[CaddyRouter]:
    router = CaddyRouter(
        state_dir, f"127.0.0.1:{free_port()}", drain_timeout=5.0, caddy_binary=caddy_binary
    )
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session
