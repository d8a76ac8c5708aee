"""Helpers shared by the runtime tests."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from nonstop.drivers.runtime.base import InstanceHandle, InstanceSpec, Runtime
from nonstop.drivers.runtime.localref import LocalRef

SAMPLEAPP = f"{sys.executable} -m nonstop.demo.sampleapp --port {{port}}"


def sample_spec(
    tmp_path: Path, instance_id: str = "v1-1", release: str = "v1", **env: str
) -> InstanceSpec:
    return InstanceSpec(
        instance_id=instance_id,
        release=release,
        command=SAMPLEAPP,
        cwd=str(tmp_path),
        env={"VERSION": release, **env},
        stop_timeout=5.0,
    )


def script_spec(tmp_path: Path, source: str, instance_id: str = "s-1") -> InstanceSpec:
    """An instance running an inline Python script (gets the port as argv[1])."""
    script = tmp_path / f"{instance_id}.py"
    script.write_text(source)
    return InstanceSpec(
        instance_id=instance_id,
        release="s",
        command=f"{sys.executable} {script} {{port}}",
        cwd=str(tmp_path),
    )


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate()`` until true; fail the test (not hang) after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(0.02)


async def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], str]:
    """GET ``url`` once on a fresh connection: (status, headers, body)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response,
    ):
        return response.status, dict(response.headers), await response.text()


def running(runtime: Runtime, handle: InstanceHandle) -> Callable[[], Awaitable[bool]]:
    """``wait_ready``'s liveness check: the runtime's status of ``handle`` is "running"."""

    async def check() -> bool:
        return (await runtime.status(handle)).running

    return check


async def always() -> bool:
    return True


def pid_of(handle: InstanceHandle) -> int:
    """The main process of a local instance (from its handle's opaque reference)."""
    return LocalRef.of(handle).pid


def local_handle(
    instance_id: str, release: str, port: int, *, pid: int = 0, started_at: float = 0.0
) -> InstanceHandle:
    """A handle as the local runtime writes it, for checks that only read its address."""
    ref = LocalRef(instance_id, pid).dumps()
    return InstanceHandle(instance_id, release, "127.0.0.1", port, ref, started_at)
