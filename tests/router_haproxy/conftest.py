"""Real HAProxy, real upstream servers on free ports, a state directory under /tmp.

The state directory is made with a short name because unix socket paths are limited to 107
bytes and pytest's tmp_path can be longer than that.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from nonstop.drivers.router.haproxy import HAProxyRouter
from nonstop_testing import require_binary
from router.helpers import Backend, free_port, start_backend


@pytest.fixture
def haproxy_binary() -> Path:
    return Path(require_binary("haproxy", "/usr/sbin/haproxy"))


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nsh-", dir="/tmp"))
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
async def router(state_dir: Path, haproxy_binary: Path) -> AsyncIterator[HAProxyRouter]:
    router = HAProxyRouter(
        state_dir, f"127.0.0.1:{free_port()}", drain_timeout=5.0, haproxy_binary=haproxy_binary
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
