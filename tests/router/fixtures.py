"""Fixtures every router kind's tests use: a short state directory under /tmp (unix socket
paths are limited to 107 bytes and pytest's tmp_path can be longer), upstream servers on free
ports, an HTTP client, and routers of every kind in the registry (``router``, ``make_router``:
one test runs once per kind)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2e.harness import free_port
from nonstop.drivers.router.managed import ManagedRouter
from nonstop.drivers.router.registry import ROUTERS
from nonstop.drivers.router.settings import RouterSettings
from nonstop_testing import require_binary
from router.helpers import Backend, start_backend

KINDS = list(ROUTERS)
BINARIES = {
    "caddy": ("caddy", str(Path(sys.prefix) / "bin" / "caddy")),
    "haproxy": ("haproxy", "/usr/sbin/haproxy"),
    "nginx": ("nginx", "/usr/sbin/nginx"),
}
"""Where each kind's binary is looked for: a missing one fails under CI=true, skips elsewhere."""

MakeRouter = Callable[..., Awaitable[ManagedRouter]]


def router_binary(kind: str) -> Path:
    return Path(require_binary(*BINARIES[kind]))


def new_router(kind: str, state: Path, **options: Any) -> ManagedRouter:
    """A router of ``kind`` (not started) on a free port; ``options``: RouterSettings fields."""
    options.setdefault("listen", f"127.0.0.1:{free_port()}")
    settings = RouterSettings(binary=router_binary(kind), **options)
    return ROUTERS[kind](state, settings)


def again(router: ManagedRouter, **options: Any) -> ManagedRouter:
    """Another router over the same state and settings: what a restarted agent builds."""
    settings = router.settings
    if options:
        settings = RouterSettings(**{**_fields(settings), **options})
    return type(router)(router.state_dir, settings)


def _fields(settings: RouterSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


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


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_router(kind: str, state_dir: Path) -> AsyncIterator[MakeRouter]:
    """Starts routers of ``kind`` (drain timeout 5 s unless given) and stops them after."""
    started: list[ManagedRouter] = []

    async def make(**options: Any) -> ManagedRouter:
        options.setdefault("drain_timeout", 5.0)
        router = new_router(kind, state_dir, **options)
        started.append(router)
        await router.start()
        return router

    yield make
    for router in started:
        await router.stop()


@pytest.fixture
async def router(make_router: MakeRouter) -> ManagedRouter:
    return await make_router()
