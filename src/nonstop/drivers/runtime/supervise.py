"""Keep instances running: restart the ones that die or stop answering, with backoff.

One watch task per instance asks the runtime, every ``tick`` (0.2 s), for the instance's status
(a cheap /proc read locally; "unknown" counts as not exited) and probes the health path:
every ``health.interval`` while the instance is not ready, every ``health.liveness_interval``
once it is. An instance

- becomes ready after ``success_threshold`` passing probes in a row, and only then: after a
  restart it is "not ready" until its own probes pass again (invariant 1: the engine routes
  only to ready instances);
- loses readiness after ``failure_threshold`` failing probes in a row;
- is restarted when its process exits, when ``liveness_failure_threshold`` probes in a row fail
  after it had been ready, or when it is not ready within ``start_period`` of starting.

Restarts keep the instance id and, when it is still free, the port; otherwise the runtime picks
a new one. Either way a "restarted" event carries the new handle so the engine can persist it
and re-route. Delays between restarts grow 1 s, 2 s, 4 s ... up to 60 s, and start again from
1 s once an instance has stayed up for 60 s (see :func:`backoff_delay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp

from nonstop.config.schema import HealthConfig
from nonstop.config.units import format_duration
from nonstop.drivers.runtime.base import (
    InstanceHandle,
    InstanceSpec,
    ReadinessCheck,
    Runtime,
    describe_facts,
)
from nonstop.drivers.runtime.health import ProbeResult, health_url, new_session, probe
from nonstop.errors import RuntimeDriverError

log = logging.getLogger(__name__)

EventKind = Literal[
    "ready", "not_ready", "exited", "unhealthy", "restarted", "restart_failed", "killed"
]


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    kind: EventKind
    instance_id: str
    message: str
    """One sentence for people: "instance v2-1 exited with code 1; restarting in 2s"."""
    handle: InstanceHandle | None = None
    """The instance's current handle; on "restarted", the new one to route to."""


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    since: float
    """Wall-clock time (epoch seconds) the instance entered this state."""
    reason: str = ""
    """Why it is not ready ("starting", "exited with code 1", ...); empty when ready."""
    restarts: int = 0


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait before restart number ``attempt`` (from 1) of a crash streak.

    attempt 1 -> 1 s, 2 -> 2 s, 3 -> 4 s, 4 -> 8 s, ... 7 -> 60 s (64 capped), 8 -> 60 s."""
    if attempt < 1:
        return 0.0
    return min(cap, base * 2.0 ** min(attempt - 1, 62))


def next_attempt(previous: int, up_for: float, reset_after: float = 60.0) -> int:
    """The attempt number of the next restart: a streak continues (previous + 1) unless the
    instance stayed up ``reset_after`` seconds, which ends the streak (back to 1)."""
    return 1 if up_for >= reset_after else previous + 1


@dataclass(eq=False)
class _Watch:
    spec: InstanceSpec
    handle: InstanceHandle
    readiness: Readiness
    up_since: float
    """Monotonic time the current process started (or was handed to us)."""
    attempt: int = 0
    ever_ready: bool = False
    last_probe: ProbeResult | None = None
    check: Callable[[InstanceHandle, float], Awaitable[ProbeResult]] | None = None
    """The role's readiness check (drivers/runtime/probes.py); None: HTTP on health.path."""
    task: asyncio.Task[None] | None = None


class Supervisor:
    """Watches instances; see the module docstring. Use as ``async with Supervisor(...)``."""

    def __init__(
        self,
        runtime: Runtime,
        health: HealthConfig,
        on_event: Callable[[SupervisorEvent], None],
        *,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        reset_after: float = 60.0,
        tick: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.health = health
        self.on_event = on_event
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.reset_after = reset_after
        self.tick = tick
        self.clock = clock
        self._watches: dict[str, _Watch] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the engine's side ---------------------------------------------------------------------

    def add(
        self,
        spec: InstanceSpec,
        handle: InstanceHandle,
        *,
        ready: bool = False,
        check: ReadinessCheck | None = None,
    ) -> None:
        """Watch ``handle`` (started from ``spec``). ``ready=True`` when its readiness probe
        already passed (the engine waited for it); otherwise the supervisor probes it first.
        ``check`` replaces the HTTP probe of ``health.path``."""
        if spec.instance_id in self._watches:
            raise RuntimeDriverError(f"instance {spec.instance_id} is already supervised")
        watch = _Watch(
            spec=spec,
            handle=handle,
            readiness=Readiness(ready, self.clock(), "" if ready else "starting"),
            up_since=time.monotonic(),
            ever_ready=ready,
            check=check,
        )
        self._watches[spec.instance_id] = watch
        watch.task = asyncio.create_task(self._run(watch), name=f"supervise {spec.instance_id}")
        watch.task.add_done_callback(self._task_done)

    async def remove(self, instance_id: str) -> None:
        """Stop watching (the instance keeps running; stopping it is the engine's call)."""
        watch = self._watches.pop(instance_id, None)
        if watch is not None and watch.task is not None:
            watch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch.task

    async def close(self) -> None:
        for instance_id in list(self._watches):
            await self.remove(instance_id)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def handle(self, instance_id: str) -> InstanceHandle:
        return self._watch(instance_id).handle

    def readiness(self, instance_id: str) -> Readiness:
        return self._watch(instance_id).readiness

    def snapshot(self) -> dict[str, Readiness]:
        return {instance_id: watch.readiness for instance_id, watch in self._watches.items()}

    def last_probe(self, instance_id: str) -> ProbeResult | None:
        return self._watch(instance_id).last_probe

    def _watch(self, instance_id: str) -> _Watch:
        try:
            return self._watches[instance_id]
        except KeyError:
            raise RuntimeDriverError(f"instance {instance_id} is not supervised") from None

    # -- watching ------------------------------------------------------------------------------

    async def _run(self, watch: _Watch) -> None:
        while True:
            kind, failure = await self._until_failure(watch)
            await self._restart(watch, kind, failure)

    async def _until_failure(self, watch: _Watch) -> tuple[EventKind, str]:
        """Probe until the instance dies or must be restarted; returns (event kind, why)."""
        health, passes, fails = self.health, 0, 0
        next_probe = time.monotonic()
        while True:
            status = await self.runtime.status(watch.handle)
            if status.exited:
                return "exited", status.reason or "exited"
            now = time.monotonic()
            if now >= next_probe:
                result = await self._probe(watch)
                if result.ok:
                    passes, fails = passes + 1, 0
                    if not watch.readiness.ready and passes >= health.success_threshold:
                        self._set_ready(watch)
                else:
                    passes, fails = 0, fails + 1
                    if watch.readiness.ready and fails >= health.failure_threshold:
                        self._set_not_ready(
                            watch, f"{fails} failed probes in a row: {result.reason}"
                        )
                    if watch.ever_ready and fails >= health.liveness_failure_threshold:
                        return (
                            "unhealthy",
                            f"failed {fails} health probes in a row ({result.reason})",
                        )
                    if not watch.ever_ready and now - watch.up_since >= health.start_period:
                        waited = format_duration(health.start_period)
                        return "unhealthy", f"not ready after {waited}: last probe: {result.reason}"
                interval = health.liveness_interval if watch.readiness.ready else health.interval
                next_probe = time.monotonic() + interval
            await asyncio.sleep(max(0.0, min(self.tick, next_probe - time.monotonic())))

    async def _probe(self, watch: _Watch) -> ProbeResult:
        if watch.check is not None:
            result = await watch.check(watch.handle, self.health.timeout)
            watch.last_probe = result
            return result
        if self._session is None:
            self._session = new_session()
        result = await probe(
            health_url(watch.handle, self.health), self.health.timeout, session=self._session
        )
        watch.last_probe = result
        return result

    async def _restart(self, watch: _Watch, kind: EventKind, failure: str) -> None:
        instance_id = watch.spec.instance_id
        watch.attempt = next_attempt(
            watch.attempt, time.monotonic() - watch.up_since, self.reset_after
        )
        delay = backoff_delay(watch.attempt, self.backoff_base, self.backoff_cap)
        self._set_not_ready(watch, failure, announce=False)
        self._emit(
            kind,
            watch,
            f"instance {instance_id} {failure}; restarting in {format_duration(delay)}",
        )
        # Stop first: an unhealthy process may still hold the port, and a dead leader may
        # have left children in its process group.
        try:
            await self._stop(watch, watch.handle)
        except RuntimeDriverError as exc:
            # e.g. stuck in the kernel: the restart goes ahead (on a new port if needed)
            self._emit("restart_failed", watch, f"instance {instance_id}: {exc}")
        while True:
            await asyncio.sleep(delay)
            try:
                handle = await self._start_shielded(watch)
                break
            except RuntimeDriverError as exc:
                watch.attempt += 1
                delay = backoff_delay(watch.attempt, self.backoff_base, self.backoff_cap)
                self._emit(
                    "restart_failed",
                    watch,
                    f"instance {instance_id} could not be restarted: {exc}; "
                    f"retrying in {format_duration(delay)}",
                )
        watch.handle, watch.up_since = handle, time.monotonic()
        watch.readiness = Readiness(False, self.clock(), "starting", watch.readiness.restarts + 1)
        watch.ever_ready = False
        self._emit(
            "restarted",
            watch,
            f"instance {instance_id} restarted "
            f"({describe_facts({**self.runtime.facts(handle), 'port': handle.port})})",
        )

    async def _start_shielded(self, watch: _Watch) -> InstanceHandle:
        """Start again; if the watch is cancelled meanwhile (``remove``), the process that was
        being started is stopped rather than left running unsupervised."""
        starting = asyncio.ensure_future(self._start_again(watch))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                orphan = await starting
                await self._stop(watch, orphan)
            raise

    async def _stop(self, watch: _Watch, handle: InstanceHandle) -> None:
        spec = watch.spec
        report = await self.runtime.stop(
            handle, spec.stop_signal, spec.stop_timeout, kill_mode=spec.kill_mode
        )
        message = report.describe(spec.instance_id)
        if message:
            self._emit("killed", watch, message)

    async def _start_again(self, watch: _Watch) -> InstanceHandle:
        """Same port when it is still free (the router's entry stays valid), else a new one."""
        same_port = dataclasses.replace(watch.spec, port=watch.handle.port)
        try:
            return await self.runtime.start(same_port)
        except RuntimeDriverError:
            if watch.spec.port is not None:
                raise
        return await self.runtime.start(watch.spec)

    # -- state and events ----------------------------------------------------------------------

    def _set_ready(self, watch: _Watch) -> None:
        watch.ever_ready = True
        watch.readiness = Readiness(True, self.clock(), "", watch.readiness.restarts)
        self._emit("ready", watch, f"instance {watch.spec.instance_id} is ready")

    def _set_not_ready(self, watch: _Watch, reason: str, *, announce: bool = True) -> None:
        was_ready = watch.readiness.ready
        since = self.clock() if was_ready else watch.readiness.since
        watch.readiness = Readiness(False, since, reason, watch.readiness.restarts)
        if announce and was_ready:
            self._emit(
                "not_ready", watch, f"instance {watch.spec.instance_id} is not ready: {reason}"
            )

    def _emit(self, kind: EventKind, watch: _Watch, message: str) -> None:
        try:
            self.on_event(SupervisorEvent(kind, watch.spec.instance_id, message, watch.handle))
        except Exception:
            log.exception("supervisor event handler failed on %r", message)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("supervision task %s died", task.get_name(), exc_info=task.exception())
