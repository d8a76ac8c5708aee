"""Readiness probes of process roles, by kind: a registry of small checks.

The port: a check is ``async check(handle, timeout) -> ProbeResult`` and never raises for a
failing instance; :func:`readiness_check` builds one from a role's ``readiness`` through the
:data:`PROBES` registry, and the engine asks it for every role (the web role, ``[app]``, has no
``readiness`` table: ``http`` on ``health.path``). A check reaches the instance only through
its handle's address and the runtime's ``facts``, never through a pid of its own. Other roles
pick one:

- ``http``: GET the path on the instance's port, 2xx/3xx passes (drivers/runtime/health.py);
- ``tcp``: the port accepts a connection;
- ``exec``: a command, run in the instance's directory with its environment plus
  ``NONSTOP_PID`` (the main process), exits 0 within the timeout;
- ``none``: the process has stayed up ``min_uptime`` (that it is alive is checked apart) and
  is not stopped by a signal (SIGSTOP, SIGTSTP: state ``T`` in /proc). That is all it can
  see: a worker deadlocked or stuck in a job passes; use ``exec`` with a command that asks the
  program (or checks a heartbeat it writes) to catch those.

A stopped process still has its listening socket accepted into by the kernel (up to its
backlog), so ``tcp`` passes for a SIGSTOPped program; ``http`` and ``exec`` fail (timeout).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from nonstop.config.schema import HealthConfig, ReadinessConfig
from nonstop.config.units import format_duration
from nonstop.drivers.runtime import procfs
from nonstop.drivers.runtime.base import InstanceHandle
from nonstop.drivers.runtime.health import ProbeResult, probe
from nonstop.errors import explain

Check = Callable[[InstanceHandle, float], Awaitable[ProbeResult]]


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """Where an instance runs, for checks that run something beside it."""

    cwd: str
    env: Mapping[str, str]
    facts: Callable[[InstanceHandle], Mapping[str, str | int]] = lambda handle: {}
    """The runtime's facts of an instance (Runtime.facts): ``exec`` passes its pid on."""


def _http(readiness: ReadinessConfig, health: HealthConfig, context: ProbeContext) -> Check:
    path = readiness.path or health.path

    async def check(handle: InstanceHandle, timeout: float) -> ProbeResult:
        return await probe(f"http://{handle.address}{path}", timeout)

    return check


def _tcp(readiness: ReadinessConfig, health: HealthConfig, context: ProbeContext) -> Check:
    async def check(handle: InstanceHandle, timeout: float) -> ProbeResult:
        began = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(handle.host, handle.port)
        except TimeoutError:
            return ProbeResult(False, None, f"timeout after {format_duration(timeout)}", timeout)
        except OSError as exc:
            refused = isinstance(exc, ConnectionRefusedError)
            reason = "connection refused" if refused else f"cannot connect: {explain(exc)}"
            return ProbeResult(False, None, reason, time.monotonic() - began)
        writer.close()
        return ProbeResult(True, None, "", time.monotonic() - began)

    return check


def _exec(readiness: ReadinessConfig, health: HealthConfig, context: ProbeContext) -> Check:
    command = readiness.command or "true"

    async def check(handle: InstanceHandle, timeout: float) -> ProbeResult:
        began = time.monotonic()
        pid = context.facts(handle).get("pid")
        env = {**os.environ, **context.env, **({"NONSTOP_PID": str(pid)} if pid else {})}
        process = await asyncio.create_subprocess_shell(
            command,
            cwd=context.cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(timeout):
                _, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return ProbeResult(False, None, f"timeout after {format_duration(timeout)}", timeout)
        elapsed = time.monotonic() - began
        if process.returncode == 0:
            return ProbeResult(True, None, "", elapsed)
        last = (err.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
        reason = f"command exited with code {process.returncode}" + (f": {last}" if last else "")
        return ProbeResult(False, None, reason, elapsed)

    return check


def _none(readiness: ReadinessConfig, health: HealthConfig, context: ProbeContext) -> Check:
    uptime = float(readiness.min_uptime)

    async def check(handle: InstanceHandle, timeout: float) -> ProbeResult:
        up = time.time() - handle.started_at
        pid = context.facts(handle).get("pid")
        stat = procfs.read_stat(int(pid)) if pid else None
        if stat is not None and stat.state in ("T", "t"):
            return ProbeResult(False, None, "its main process is stopped (SIGSTOP?)")
        if up >= uptime:
            return ProbeResult(True)
        return ProbeResult(False, None, f"up {up:.1f}s of min_uptime {format_duration(uptime)}")

    return check


PROBES: dict[str, Callable[[ReadinessConfig, HealthConfig, ProbeContext], Check]] = {
    "http": _http,
    "tcp": _tcp,
    "exec": _exec,
    "none": _none,
}


WEB_READINESS = ReadinessConfig(kind="http")
"""The web role's readiness: HTTP on ``health.path``."""


def readiness_check(
    readiness: ReadinessConfig | None, health: HealthConfig, context: ProbeContext
) -> Check:
    """The check for ``readiness.kind`` (None: the web role's); timeouts and thresholds come
    from ``[health]``."""
    readiness = readiness or WEB_READINESS
    return PROBES[readiness.kind](readiness, health, context)
