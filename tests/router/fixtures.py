"""Fixtures both router drivers' tests use: a short state directory under /tmp (unix socket
paths are limited to 107 bytes and pytest's tmp_path can be longer), upstream servers on free
ports, and an HTTP client."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from router.helpers import Backend, start_backend


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
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session
