"""HTTP health probes: is an instance ready for traffic, is it still alive.

A probe is one GET of the health path: any 2xx or 3xx (redirects are not followed) is a pass,
anything else a failure with a short reason ("status 503", "connection refused", "timeout
after 2s") that ends up in events and rollout messages. Connections are not kept alive between
probes, so a probe after a restart on the same port never reuses a socket to the old process.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from nonstop.config.schema import HealthConfig
from nonstop.config.units import format_duration
from nonstop.drivers.runtime.base import InstanceHandle
from nonstop.errors import explain


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    status: int | None = None
    reason: str = ""
    """Empty when ok; otherwise why the probe failed."""
    elapsed: float = 0.0


def new_session() -> aiohttp.ClientSession:
    """The session probes share: no keep-alive, no proxies from the environment."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def health_url(handle: InstanceHandle, health: HealthConfig) -> str:
    return f"http://{handle.address}{health.path}"


async def probe(
    url: str, timeout: float, *, session: aiohttp.ClientSession | None = None
) -> ProbeResult:
    """GET ``url`` once. Never raises for a failing instance: the failure is in the result."""
    if session is None:
        async with new_session() as own:
            return await probe(url, timeout, session=own)
    began = time.monotonic()
    try:
        async with (
            asyncio.timeout(timeout),
            session.get(url, allow_redirects=False) as response,
        ):
            await response.read()
            status = response.status
    except TimeoutError:
        return ProbeResult(False, None, f"timeout after {format_duration(timeout)}", timeout)
    except aiohttp.ClientConnectorError as exc:
        refused = exc.os_error.errno == errno.ECONNREFUSED
        reason = "connection refused" if refused else f"cannot connect: {explain(exc.os_error)}"
        return ProbeResult(False, None, reason, time.monotonic() - began)
    except (aiohttp.ClientError, OSError) as exc:
        return ProbeResult(False, None, _describe(exc), time.monotonic() - began)
    elapsed = time.monotonic() - began
    if 200 <= status < 400:
        return ProbeResult(True, status, "", elapsed)
    return ProbeResult(False, status, f"status {status}", elapsed)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    return explain(exc)


async def wait_ready(
    handle: InstanceHandle,
    health: HealthConfig,
    deadline: float | None,
    alive: Callable[[], Awaitable[bool]],
    *,
    session: aiohttp.ClientSession | None = None,
    check: Callable[[InstanceHandle, float], Awaitable[ProbeResult]] | None = None,
) -> str | None:
    """Probe every ``health.interval`` until ``success_threshold`` passes in a row.

    ``deadline`` is a ``time.monotonic()`` instant; None means ``start_period`` from now.
    Returns None when ready, else why not: the instance exited, or the deadline passed
    ("not ready after 60s: last probe: connection refused"). ``check`` replaces the HTTP
    probe of ``health.path`` (a role's readiness probe, drivers/runtime/probes.py)."""
    if session is None and check is None:
        async with new_session() as own:
            return await wait_ready(handle, health, deadline, alive, session=own)
    began = time.monotonic()
    if deadline is None:
        deadline = began + health.start_period
    url = health_url(handle, health)
    passes, last = 0, "no probe yet"
    while True:
        if not await alive():
            return f"exited before it was ready (last probe: {last})"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            waited = format_duration(time.monotonic() - began)
            return f"not ready after {waited}: last probe: {last}"
        budget = min(health.timeout, remaining)
        if check is not None:
            result = await check(handle, budget)
        else:
            result = await probe(url, budget, session=session)
        if result.ok:
            passes += 1
            if passes >= health.success_threshold:
                return None
        else:
            passes = 0
            # A probe the deadline cut short says nothing new: keep the earlier reason.
            cut_short = budget < health.timeout and result.reason.startswith("timeout")
            if not cut_short or last == "no probe yet":
                last = result.reason
        await asyncio.sleep(max(0.0, min(health.interval, deadline - time.monotonic())))
