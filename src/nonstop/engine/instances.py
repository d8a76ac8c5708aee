"""Instances of every release: start, readiness, liveness, restart, drain, stop.

The manager reconciles *desired* replica counts (set by planner actions, persisted) with the
processes that exist. Its safety rules, with the invariant each one serves:

- An instance enters the routing table only once its readiness probe passed (1). After a crash
  and restart it is "unready" (out of the table) until the probe passes again.
- Leaving is two steps: "draining" takes it out of the table at once; the process is stopped
  only when the router reports no request or stream in flight to it, or the drain deadline
  passed (2). A stop sends the app's stop signal and kills the group after ``stop_timeout``.
- An instance that keeps dying after readiness is *crash-looping*: ``health.crash_loop_restarts``
  restarts within ``health.crash_loop_window`` (3 within 2 minutes by default) and its view
  says ``failed`` ("crash-looping: restarted 3 times within 120s; last: exited with code 1")
  and not ready, so the rollout that needs it gives up rather than wait for an instance that
  is up for a second at a time. The supervisor keeps restarting it with backoff; once it has
  gone a whole window without a restart, it is an ordinary instance again.
- Every state change is written to the store before the agent acts on it (4), and the
  instance's id is in its environment (NONSTOP_INSTANCE) before the process exists, so a
  process started just before an agent crash is found and cleaned up, never leaked.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nonstop.config.schema import NonstopConfig
from nonstop.config.units import format_duration
from nonstop.drivers.runtime.base import (
    InstanceHandle,
    InstanceSpec,
    Runtime,
    StopRules,
    Supervision,
    describe_facts,
)
from nonstop.drivers.runtime.drainers import drainer_for
from nonstop.drivers.runtime.health import wait_ready
from nonstop.drivers.runtime.probes import Check, ProbeContext, readiness_check
from nonstop.drivers.runtime.supervise import SupervisorEvent
from nonstop.engine.roles import WEB
from nonstop.engine.roles import role as role_of
from nonstop.errors import RuntimeDriverError
from nonstop.plan.model import InstanceView
from nonstop.plan.roles import RoleCount
from nonstop.store import ReleaseRow, Store

DRAIN_SETTLE = 0.5
QUIET_STEP_LIMIT = 60.0
"""How long a leaving worker's stop waits for the runtime to report its quiet step. The local
runtime bounds a quiet_command at 30 s itself; this bound keeps a runtime that never answers
(a host gone quiet under a remote one) from holding the stop forever (invariant 9)."""
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
    restarted_at: list[float] = field(default_factory=list)
    """When the supervisor restarted it, within the crash-loop window (oldest first)."""
    last_exit: str = ""
    role: str = WEB
    spec: InstanceSpec | None = field(default=None, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def crash_loop(self, now: float, restarts: int, window: float) -> str | None:
        """Why the instance is crash-looping at ``now``, or None (see the module docstring)."""
        recent = [t for t in self.restarted_at if now - t < window]
        if len(recent) < restarts:
            return None
        last = f"; last: {self.last_exit}" if self.last_exit else ""
        return f"crash-looping: restarted {len(recent)} times within {window:g}s{last}"

    def view(self, crash_loop: str | None = None) -> InstanceView:
        failed = self.failed if self.state == "failed" else None
        if failed is None and self.state not in ("draining", "stopped"):
            failed = crash_loop
        return InstanceView(
            id=self.id,
            release=self.release,
            ready=self.state == "ready" and failed is None,
            draining=self.state == "draining",
            started_at=self.handle.started_at if self.handle else 0.0,
            ready_since=self.ready_since,
            failed=failed,
            role=self.role,
        )

    def to_dict(self, facts: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        """The instance for status; ``facts`` are its runtime's (Runtime.facts: locally the
        pid, which the API has always shown as ``pid``)."""
        return {
            "id": self.id,
            "release": self.release,
            "role": self.role,
            "state": self.state,
            "address": self.handle.address if self.handle else None,
            "pid": None,
            **(facts or {}),
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
        self._quiet_until: dict[str, float] = {}
        """Worker id -> the earliest time its stop signal may go: infinity while its quiet
        step is on its way, then (at the next drain step) that moment + ``_quiet_grace``."""
        self._quiet_grace: dict[str, float] = {}
        """Worker id -> its role's ``quiet_grace``, once its quiet step was delivered (0 when
        the step failed: nothing is gained by waiting for a worker that was not quieted)."""
        self._supervisors: dict[str, Supervision] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- views -------------------------------------------------------------------------------

    def views(self, now: float | None = None) -> tuple[InstanceView, ...]:
        now = time.time() if now is None else now
        return tuple(
            i.view(self._crash_loop(i, now)) for i in self.live.values() if i.state != "stopped"
        )

    def _crash_loop(self, live: Live, now: float) -> str | None:
        if not live.restarted_at:
            return None
        health = self.config_of(live.release).health
        window = float(health.crash_loop_window)
        live.restarted_at = [t for t in live.restarted_at if now - t < window]
        return live.crash_loop(now, health.crash_loop_restarts, window)

    def serving(self, release: str, role: str = WEB) -> list[Live]:
        return [
            i
            for i in self.live.values()
            if i.release == release and i.role == role and i.state not in ("draining", "stopped")
        ]

    def ready_handles(self) -> list[InstanceHandle]:
        """Handles of the ready web instances: the ones the router may send traffic to."""
        return [
            i.handle
            for i in self.live.values()
            if i.state == "ready" and i.handle and i.role == WEB
        ]

    def releases(self, role: str = WEB) -> set[str]:
        return {i.release for i in self.live.values() if i.state != "stopped" and i.role == role}

    def role_counts(self, role: str) -> dict[str, RoleCount]:
        """Per release (newest instance first), its serving and ready instances of ``role``."""
        counts: dict[str, RoleCount] = {}
        for live in sorted(self.live.values(), key=lambda i: -_started(i)):
            if live.role != role or live.state in ("draining", "stopped"):
                continue
            count = counts.get(live.release, RoleCount())
            ready = count.ready + (1 if live.state == "ready" else 0)
            counts[live.release] = RoleCount(count.serving + 1, ready)
        return counts

    def roles(self) -> set[str]:
        """The non-web roles that have instances."""
        return {i.role for i in self.live.values() if i.role != WEB and i.state != "stopped"}

    # -- recovery ----------------------------------------------------------------------------

    def facts(self, live: Live) -> Mapping[str, str | int]:
        """What the runtime shows of the instance (locally its pid); {} before it started."""
        return self.runtime.facts(live.handle) if live.handle else {}

    async def adopt(self) -> None:
        """Take over the instances a previous agent left running (the runtime checks each is
        the very one the store recorded). A row without a reference was started just before
        that agent died: the stray sweep after recovery stops its process, if any."""
        for row in self.store.instances():
            handle = InstanceHandle.from_dict(row.handle) if row.handle.get("reference") else None
            if handle is None or not (await self.runtime.adopt(handle)).running:
                self.store.set_instance_state(row.id, "stopped")
                self.emit("info", f"{row.id} was not running when the agent started")
                continue
            live = Live(row.id, row.release, handle, row.state, row.ready_since, role=row.role)
            live.drain_deadline = row.drain_deadline
            if row.state == "draining":
                live.drain_started = time.time() - DRAIN_SETTLE
            self.live[row.id] = live
            release = self.store.release(row.release)
            if release is not None:
                live.spec = self._spec(live, release, self.config_of(row.release))
            if row.state in ("ready", "unready") and live.spec is not None:
                self._supervise(live, ready=row.state == "ready")
            elif row.state == "starting" and live.spec is not None:
                live.task = asyncio.create_task(self._first_ready(live))
            facts = describe_facts({**self.runtime.facts(handle), "state": row.state})
            self.emit("info", f"adopted {row.id} ({facts})")

    # -- scaling -----------------------------------------------------------------------------

    async def reconcile(
        self, release: ReleaseRow, desired: int, now: float, role: str = WEB
    ) -> None:
        """Start or drain instances of ``release`` until ``desired`` serve (not failed)."""
        serving = self.serving(release.name, role)
        if len(serving) < desired:
            for _ in range(desired - len(serving)):
                await self.start(release, role)
        elif len(serving) > desired:
            # Leave the ones that cannot serve first, then the newest (keeps warm, proven ones).
            order = sorted(
                serving,
                key=lambda i: (i.state == "ready", -(i.handle.started_at if i.handle else 0)),
            )
            for live in order[: len(serving) - desired]:
                self.begin_drain(live, now)

    async def start(self, release: ReleaseRow, role: str = WEB) -> Live:
        config = self.config_of(release.name)
        number = self.store.next_instance_number(release.name, role)
        instance_id = instance_name(release.name, role, number)
        self.store.upsert_instance(instance_id, release.name, {}, "starting", role=role)
        live = Live(instance_id, release.name, None, "starting", role=role)
        self.live[instance_id] = live
        live.handle = await self._spawn(live, release, config)
        if live.handle is not None:
            handle = live.handle.to_dict()
            self.store.upsert_instance(instance_id, release.name, handle, "starting", role=role)
            live.task = asyncio.create_task(self._first_ready(live))
        return live

    def _spec(self, live: Live, release: ReleaseRow, config: NonstopConfig) -> InstanceSpec:
        rules = role_of(config, live.role)
        env = {
            **release.env,
            **rules.env,
            "NONSTOP_INSTANCE": live.id,
            "NONSTOP_RELEASE": release.name,
            "NONSTOP_STATE_DIR": str(self.state_dir),
        }
        return InstanceSpec(
            instance_id=live.id,
            release=release.name,
            command=release.command if live.role == WEB else rules.command,
            cwd=release.cwd,
            env=env,
            stop_signal=rules.stop.signal,
            stop_timeout=rules.stop.timeout,
            kill_mode=rules.stop.kill_mode,
            log_path=str(self.logs / f"{live.id}.log"),
        )

    async def _spawn(
        self, live: Live, release: ReleaseRow, config: NonstopConfig
    ) -> InstanceHandle | None:
        live.spec = self._spec(live, release, config)
        try:
            return await self.runtime.start(live.spec)
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
        supervisor = self._supervisors.get(live.release)
        if supervisor is not None and live.state != "failed":
            live.task = asyncio.create_task(supervisor.remove(live.id))
        live.state, live.drain_started = "draining", now
        # Only web instances have traffic to drain; the others go on to their stop rules.
        drainer = drainer_for(live.role == WEB)
        live.drain_deadline = drainer.deadline(now, config.app.drain_timeout)
        self.store.set_instance_state(live.id, "draining", drain_deadline=live.drain_deadline)
        if drainer.quiets:
            self._quiet(live, config)
        self.on_change()

    def _quiet(self, live: Live, config: NonstopConfig) -> None:
        """Ask a leaving worker to take no new work, when its role has a quiet step. A web
        instance's quiet step is for a release kept warm (:meth:`quiet_warm`); a draining one
        closes its connections on its stop signal at the drain deadline."""
        if live.role == WEB:
            return
        role = role_of(config, live.role)
        if self._start_quiet(live, role.stop, "it takes no new work", grace=role.quiet_grace):
            self._quiet_until[live.id] = math.inf

    def quiet_warm(self, live: Live, sent: Callable[[Live], None]) -> bool:
        """Send the web role's quiet step to a web instance kept warm for rollback (it closes
        its long-lived connections, keeps serving HTTP); ``sent`` is called once it is
        delivered. False when the release sets no quiet step."""
        rules = role_of(self.config_of(live.release), WEB).stop
        return self._start_quiet(live, rules, "kept warm, it closes its connections", sent)

    def _start_quiet(
        self,
        live: Live,
        rules: StopRules,
        what: str,
        sent: Callable[[Live], None] | None = None,
        grace: float = 0.0,
    ) -> bool:
        if live.handle is None or not (rules.quiet_signal or rules.quiet_command):
            return False
        task = asyncio.create_task(self._send_quiet(live, live.handle, rules, what, sent, grace))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

    async def _send_quiet(
        self,
        live: Live,
        handle: InstanceHandle,
        rules: StopRules,
        what: str,
        sent: Callable[[Live], None] | None,
        grace: float = 0.0,
    ) -> None:
        how = rules.quiet_signal or "quiet_command"
        try:
            async with asyncio.timeout(QUIET_STEP_LIMIT):
                failure = await self.runtime.quiet(handle, rules)
        except TimeoutError:
            failure = f"the runtime did not answer within {QUIET_STEP_LIMIT:g}s"
        except RuntimeDriverError as exc:
            failure = str(exc)
        finally:  # the stop waits for the step's outcome, never for a lost task
            if live.id in self._quiet_until:
                self._quiet_grace[live.id] = grace
        if failure:
            if live.id in self._quiet_grace:
                self._quiet_grace[live.id] = 0.0
            self.emit("warning", f"{live.id}: could not quiet it ({how}): {failure}")
        elif grace and live.id in self._quiet_until:
            self.emit("info", f"quieted {live.id} ({how}): {what}; stop signal in {grace:g}s")
        else:
            self.emit("info", f"quieted {live.id} ({how}): {what}")
        if sent is not None:
            sent(live)

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
            busy = drainer_for(live.role == WEB).busy(address, in_flight, routed)
            settled = now - live.drain_started >= DRAIN_SETTLE
            if live.id in self._quiet_grace:  # delivered: its grace counts from now
                self._quiet_until[live.id] = now + self._quiet_grace.pop(live.id)
            if now < self._quiet_until.get(live.id, 0.0):
                continue  # a worker's quiet step is on its way, or its quiet_grace runs
            if (settled and busy == 0) or now >= live.drain_deadline:
                if busy:
                    self.emit("warning", f"{live.id}: drain deadline passed with {busy} in flight")
                self._stopping.add(live.id)
                live.task = asyncio.create_task(self._stop(live))

    async def _stop(self, live: Live) -> None:
        try:
            if live.handle is not None:
                stop = role_of(self.config_of(live.release), live.role).stop
                if live.spec is not None:  # the rules it was started with
                    stop = replace(
                        stop,
                        signal=live.spec.stop_signal,
                        timeout=live.spec.stop_timeout,
                        kill_mode=live.spec.kill_mode,
                    )
                if live.role != WEB:  # web instances drained already; workers stop now
                    whom = "main process" if stop.kill_mode == "main" else "process group"
                    self.emit(
                        "info",
                        f"stopping {live.id}: {stop.signal} to its {whom}, "
                        f"{format_duration(stop.timeout)} to finish",
                    )
                report = await self.runtime.stop(
                    live.handle, stop.signal, stop.timeout, kill_mode=stop.kill_mode
                )
                if report.describe(live.id):
                    self.emit("warning", report.describe(live.id))
        finally:
            live.state = "stopped"
            self.store.set_instance_state(live.id, "stopped")
            self.live.pop(live.id, None)
            self._stopping.discard(live.id)
            self._quiet_until.pop(live.id, None)
            self._quiet_grace.pop(live.id, None)
            self.emit("info", f"stopped {live.id}")
            self.on_change()

    async def stop_all(self) -> None:
        """Stop every instance, then any process of this state dir still alive that the store
        did not know (one started while the store could not write, say): none outlives
        ``nonstop down`` (invariant 9)."""
        await self.close()
        for live in list(self.live.values()):
            if live.task:
                live.task.cancel()
        results = await asyncio.gather(
            *(self._stop(i) for i in list(self.live.values())), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                self.emit("error", f"an instance did not stop cleanly: {result}")
        await self.stop_strays()

    async def stop_strays(self) -> list[str]:
        """Ask the runtime to stop what it runs for this state dir that no live instance
        accounts for (runtime.sweep_strays); each one is a warning event."""
        handles = [live.handle for live in self.live.values() if live.handle]
        stopped = await self.runtime.sweep_strays(handles)
        for message in stopped:
            self.emit("warning", message)
        return stopped

    async def close(self) -> None:
        """Stop watching (instances keep running: the next agent adopts them)."""
        for supervisor in self._supervisors.values():
            await supervisor.close()
        self._supervisors.clear()

    # -- health ------------------------------------------------------------------------------

    async def _first_ready(self, live: Live) -> None:
        """Wait for the first readiness; a new instance that never gets there *fails* (its
        rollout aborts) instead of being restarted forever. Once ready, the supervisor takes
        over: liveness, restarts with backoff, readiness lost and regained."""
        assert live.handle is not None
        handle, health = live.handle, self.config_of(live.release).health

        async def alive() -> bool:
            return not (await self.runtime.status(handle)).exited

        failure = await wait_ready(handle, health, None, alive, check=self._check(live))
        if failure is not None:
            status = await self.runtime.status(handle)
            if status.exited:
                failure = f"{failure}; {status.reason or 'exited'}"
            lines = await self.runtime.log_tail(handle, 3)
            if lines:
                failure += " | last output: " + " / ".join(line.strip() for line in lines)
            self._fail(live, failure)
            return
        self._set_ready(live)
        facts = describe_facts(self.runtime.facts(handle))
        where = f"at {handle.address}" if live.role == WEB else f"({facts})"
        self.emit("info", f"{live.id} ready {where}")
        self._supervise(live, ready=True)

    def _supervise(self, live: Live, *, ready: bool) -> None:
        assert live.spec is not None
        assert live.handle is not None
        supervisor = self._supervisors.get(live.release)
        if supervisor is None:
            health = self.config_of(live.release).health
            supervisor = self.runtime.supervise(health, self._on_supervisor_event)
            self._supervisors[live.release] = supervisor
        supervisor.add(live.spec, live.handle, ready=ready, check=self._check(live))

    def _check(self, live: Live) -> Check:
        """The readiness check of the instance's role, from the probe registry."""
        config = self.config_of(live.release)
        readiness = role_of(config, live.role).readiness
        cwd, env = (live.spec.cwd, live.spec.env) if live.spec else ("", {})
        context = ProbeContext(cwd, env, self.runtime.facts)
        return readiness_check(readiness, config.health, context)

    def _on_supervisor_event(self, event: SupervisorEvent) -> None:
        live = self.live.get(event.instance_id)
        if live is None or live.state in ("draining", "stopped"):
            return
        if event.kind == "ready":
            self._set_ready(live)
        elif event.kind in ("not_ready", "exited", "unhealthy"):
            live.state = "unready"
            if event.kind != "not_ready":
                message = event.message.removeprefix(f"instance {live.id} ")
                live.last_exit = message.split("; restarting")[0]
            self.store.set_instance_state(live.id, "unready")
            self.on_change()
        elif event.kind == "restarted" and event.handle is not None:
            live.handle, live.restarts = event.handle, live.restarts + 1
            live.restarted_at.append(time.time())
            self.store.upsert_instance(live.id, live.release, event.handle.to_dict(), "unready")
            self.on_change()
        level = "info" if event.kind in ("ready", "restarted") else "warning"
        self.emit(level, event.message)

    def _set_ready(self, live: Live) -> None:
        live.state, live.ready_since, live.failed = "ready", time.time(), None
        self.store.set_instance_state(live.id, "ready", ready_since=live.ready_since)
        self.on_change()


def instance_name(release: str, role: str, number: int) -> str:
    """``v2-1`` for the web role, ``v2:worker-1`` for another (":" is in no release name).

    >>> instance_name("v2", "web", 1), instance_name("v2", "worker", 3)
    ('v2-1', 'v2:worker-3')
    """
    return f"{release}-{number}" if role == WEB else f"{release}:{role}-{number}"


def _started(live: Live) -> float:
    return live.handle.started_at if live.handle else 0.0
