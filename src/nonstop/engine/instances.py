"""Instances of every release: start, readiness, liveness, restart, drain, stop.

The manager reconciles *desired* replica counts (set by planner actions, persisted) with the
processes that exist. Its safety rules, with the invariant each one serves:

- An instance enters the routing table only once its readiness probe passed (1). After a crash
  and restart it is "unready" (out of the table) until the probe passes again.
- Leaving is two steps: "draining" takes it out of the table at once; the process is stopped
  only when the router reports no request or stream in flight to it, or the drain deadline
  passed (2). A stop sends the app's stop signal and kills the group after ``stop_timeout``.
- Every state change is written to the store before the agent acts on it (4), and the
  instance's id is in its environment (NONSTOP_INSTANCE) before the process exists, so a
  process started just before an agent crash is found and cleaned up, never leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nonstop.config.schema import HealthConfig, NonstopConfig
from nonstop.drivers.runtime.base import InstanceHandle, InstanceSpec, Runtime
from nonstop.drivers.runtime.health import probe, wait_ready
from nonstop.errors import RuntimeDriverError
from nonstop.plan.model import InstanceView
from nonstop.store import ReleaseRow, Store

RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
DRAIN_SETTLE = 0.5
"""Seconds an instance stays out of the table before an idle in-flight count is trusted: the
router may still be handing it a request it accepted just before the table changed."""


@dataclass
class Live:
    id: str
    release: str
    handle: InstanceHandle | None
    state: str
    ready_since: float | None = None
    drain_started: float | None = None
    drain_deadline: float | None = None
    failed: str | None = None
    restarts: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def view(self) -> InstanceView:
        return InstanceView(
            id=self.id,
            release=self.release,
            ready=self.state == "ready",
            draining=self.state == "draining",
            started_at=self.handle.started_at if self.handle else 0.0,
            ready_since=self.ready_since,
            failed=self.failed if self.state == "failed" else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "release": self.release,
            "state": self.state,
            "address": self.handle.address if self.handle else None,
            "pid": self.handle.pid if self.handle else None,
            "ready_since": self.ready_since,
            "drain_deadline": self.drain_deadline,
            "failed": self.failed,
            "restarts": self.restarts,
        }


class InstanceManager:
    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        logs: Path,
        state_dir: Path,
        config_of: Callable[[str], NonstopConfig],
        on_change: Callable[[], None],
        emit: Callable[[str, str], None],
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.logs = logs
        self.state_dir = state_dir
        self.config_of = config_of
        self.on_change = on_change
        self.emit = emit
        self.live: dict[str, Live] = {}
        self._stopping: set[str] = set()

    # -- views -------------------------------------------------------------------------------

    def views(self) -> tuple[InstanceView, ...]:
        return tuple(i.view() for i in self.live.values() if i.state != "stopped")

    def serving(self, release: str) -> list[Live]:
        return [
            i
            for i in self.live.values()
            if i.release == release and i.state not in ("draining", "stopped")
        ]

    def ready_handles(self) -> list[InstanceHandle]:
        return [i.handle for i in self.live.values() if i.state == "ready" and i.handle]

    def releases(self) -> set[str]:
        return {i.release for i in self.live.values() if i.state != "stopped"}

    # -- recovery ----------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Take over the instances a previous agent left running (pid + start marker checked)."""
        for row in self.store.instances():
            handle = InstanceHandle.from_dict(row.handle) if row.handle.get("pid") else None
            if handle is None or not self.runtime.alive(handle):
                if handle is None:
                    self._kill_orphan(row.id)
                self.store.set_instance_state(row.id, "stopped")
                self.emit("info", f"{row.id} was not running when the agent started")
                continue
            live = Live(row.id, row.release, handle, row.state, row.ready_since)
            live.drain_deadline = row.drain_deadline
            if row.state == "draining":
                live.drain_started = time.time() - DRAIN_SETTLE
            self.live[row.id] = live
            if row.state in ("ready", "unready", "starting"):
                live.task = asyncio.create_task(self._watch(live, adopted=row.state == "ready"))
            self.emit("info", f"adopted {row.id} (pid {handle.pid}, {row.state})")

    def _kill_orphan(self, instance_id: str) -> None:
        """A process may have been started right before the agent died, before its pid was
        recorded: find it by the NONSTOP_INSTANCE it carries in its environment."""
        needle = f"NONSTOP_INSTANCE={instance_id}\0".encode()
        state = f"NONSTOP_STATE_DIR={self.state_dir}\0".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes() + b"\0"
            except OSError:
                continue
            if needle in environ and state in environ:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(entry.name), signal.SIGKILL)
                self.emit("warning", f"killed orphan process {entry.name} of {instance_id}")

    # -- scaling -----------------------------------------------------------------------------

    async def reconcile(self, release: ReleaseRow, desired: int, now: float) -> None:
        """Start or drain instances of ``release`` until ``desired`` serve (not failed)."""
        serving = self.serving(release.name)
        if len(serving) < desired:
            for _ in range(desired - len(serving)):
                await self.start(release)
        elif len(serving) > desired:
            # Leave the ones that cannot serve first, then the newest (keeps warm, proven ones).
            order = sorted(
                serving,
                key=lambda i: (i.state == "ready", -(i.handle.started_at if i.handle else 0)),
            )
            for live in order[: len(serving) - desired]:
                self.begin_drain(live, now)

    async def start(self, release: ReleaseRow) -> Live:
        config = self.config_of(release.name)
        number = self.store.next_instance_number(release.name)
        instance_id = f"{release.name}-{number}"
        self.store.upsert_instance(instance_id, release.name, {}, "starting")
        live = Live(instance_id, release.name, None, "starting")
        self.live[instance_id] = live
        live.handle = await self._spawn(live, release, config)
        if live.handle is not None:
            self.store.upsert_instance(instance_id, release.name, live.handle.to_dict(), "starting")
            live.task = asyncio.create_task(self._watch(live))
        return live

    async def _spawn(
        self, live: Live, release: ReleaseRow, config: NonstopConfig, port: int | None = None
    ) -> InstanceHandle | None:
        env = {
            **release.env,
            "NONSTOP_INSTANCE": live.id,
            "NONSTOP_RELEASE": release.name,
            "NONSTOP_STATE_DIR": str(self.state_dir),
        }
        spec = InstanceSpec(
            instance_id=live.id,
            release=release.name,
            command=release.command,
            cwd=release.cwd,
            env=env,
            stop_signal=config.app.stop_signal,
            stop_timeout=config.app.stop_timeout,
            log_path=str(self.logs / f"{live.id}.log"),
            port=port,
        )
        try:
            return await self.runtime.start(spec)
        except RuntimeDriverError as exc:
            self._fail(live, str(exc))
            return None

    def _fail(self, live: Live, reason: str) -> None:
        live.state, live.failed = "failed", reason
        self.store.set_instance_state(live.id, "failed")
        self.emit("error", f"{live.id}: {reason}")
        self.on_change()

    def begin_drain(self, live: Live, now: float) -> None:
        if live.state in ("draining", "stopped"):
            return
        config = self.config_of(live.release)
        if live.task:
            live.task.cancel()
        live.state, live.drain_started = "draining", now
        live.drain_deadline = now + config.app.drain_timeout
        self.store.set_instance_state(live.id, "draining", drain_deadline=live.drain_deadline)
        self.on_change()

    async def drain_step(self, in_flight: Mapping[str, int], routed: set[str], now: float) -> None:
        """Stop draining instances whose traffic is gone (or whose deadline passed).

        ``routed`` holds the addresses in the last table the router accepted: an instance still
        in it is busy by definition (the table change that removes it has not landed yet)."""
        for live in list(self.live.values()):
            if live.state != "draining" or live.id in self._stopping:
                continue
            assert live.drain_started is not None
            assert live.drain_deadline is not None
            address = live.handle.address if live.handle else ""
            busy = in_flight.get(address, 0) + (1 if address in routed else 0)
            settled = now - live.drain_started >= DRAIN_SETTLE
            if (settled and busy == 0) or now >= live.drain_deadline:
                if busy:
                    self.emit("warning", f"{live.id}: drain deadline passed with {busy} in flight")
                self._stopping.add(live.id)
                live.task = asyncio.create_task(self._stop(live))

    async def _stop(self, live: Live) -> None:
        try:
            if live.handle is not None:
                config = self.config_of(live.release)
                await self.runtime.stop(
                    live.handle, config.app.stop_signal, config.app.stop_timeout
                )
        finally:
            live.state = "stopped"
            self.store.set_instance_state(live.id, "stopped")
            self.live.pop(live.id, None)
            self._stopping.discard(live.id)
            self.emit("info", f"stopped {live.id}")
            self.on_change()

    async def stop_all(self) -> None:
        for live in list(self.live.values()):
            if live.task:
                live.task.cancel()
        await asyncio.gather(*(self._stop(i) for i in list(self.live.values())))

    # -- health ------------------------------------------------------------------------------

    async def _watch(self, live: Live, *, adopted: bool = False) -> None:
        """Readiness, then liveness; restart with backoff after the instance was once ready."""
        health = self.config_of(live.release).health
        if not adopted and not await self._until_ready(live, health):
            return
        while True:
            reason = await self._until_dead(live, health)
            if not await self._restart(live, reason, health):
                return

    async def _until_ready(self, live: Live, health: HealthConfig) -> bool:
        assert live.handle is not None
        handle = live.handle
        failure = await wait_ready(handle, health, None, lambda: self.runtime.alive(handle))
        if failure is not None:
            exit_reason = self.runtime.exit_reason(handle)
            if exit_reason:
                failure = f"{failure}; {exit_reason}"
            tail = getattr(self.runtime, "log_tail", None)
            lines = tail(handle, 3) if tail else []
            if lines:
                failure += " | last output: " + " / ".join(line.strip() for line in lines)
            self._fail(live, failure)
            return False
        live.state, live.ready_since, live.failed = "ready", time.time(), None
        self.store.set_instance_state(live.id, "ready", ready_since=live.ready_since)
        self.emit("info", f"{live.id} ready at {handle.address}")
        self.on_change()
        return True

    async def _until_dead(self, live: Live, health: HealthConfig) -> str:
        assert live.handle is not None
        handle, failures = live.handle, 0
        url = f"http://{handle.address}{health.path}"
        while True:
            await asyncio.sleep(health.liveness_interval)
            if not self.runtime.alive(handle):
                return self.runtime.exit_reason(handle) or "exited"
            result = await probe(url, health.timeout)
            failures = 0 if result.ok else failures + 1
            if failures >= health.liveness_failure_threshold:
                return f"liveness failed {failures} times: {result.reason}"

    async def _restart(self, live: Live, reason: str, health: HealthConfig) -> bool:
        if live.ready_since is not None and time.time() - live.ready_since > 60:
            live.restarts = 0  # it stayed up a minute: the next crash starts the backoff over
        delay = RESTART_BACKOFF[min(live.restarts, len(RESTART_BACKOFF) - 1)]
        live.state, live.restarts = "unready", live.restarts + 1
        self.store.set_instance_state(live.id, "unready")
        self.emit("warning", f"{live.id} {reason}; restarting in {delay:g}s")
        self.on_change()
        old = live.handle
        if old is not None:
            config = self.config_of(live.release)
            await self.runtime.stop(old, config.app.stop_signal, config.app.stop_timeout)
        await asyncio.sleep(delay)
        release = self.store.release(live.release)
        if release is None:
            return False
        handle = await self._spawn(live, release, self.config_of(live.release))
        if handle is None:
            return False
        live.handle = handle
        self.store.upsert_instance(live.id, live.release, handle.to_dict(), "unready")
        return await self._until_ready(live, health)
