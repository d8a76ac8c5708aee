"""The engine: runs planner decisions through the drivers, and is the only layer that waits.

Each tick (STYLE.md #2: a flat list of reconcile steps, each idempotent):

1. reconcile instances with the durable *desired* replica counts;
2. if a rollout runs: observe, ``decide()``, persist the new state and journal the actions as
   "intended" in one transaction, then do them and journal "done" (invariant 4);
3. push the routing table to the router when it changed (ready, non-draining instances only);
4. stop draining instances the router no longer sends anything to (invariant 2);
5. housekeeping: retire the previous release after ``keep_previous``, revive the router.

Actions are declarative (a desired count, a weight map), so replaying the journal after
``kill -9`` re-issues them harmlessly: a restarted agent re-decides from the stored state plus
fresh observations and lands in the same place.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from nonstop.analysis.checks import QueryValue
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.presets import latency_bounds
from nonstop.config.load import validate_config
from nonstop.config.schema import NonstopConfig
from nonstop.drivers.router.base import ReleaseSlots, Router, RouteTable
from nonstop.engine import migrations, releases, retention
from nonstop.engine.faults import crash_point
from nonstop.engine.health import Health, PendingEvent, describe
from nonstop.engine.instances import InstanceManager, Live
from nonstop.engine.roles import WEB as WEB_ROLE
from nonstop.engine.roles import check_kind
from nonstop.engine.roles import role as role_of
from nonstop.engine.roles import warnings as role_traps
from nonstop.engine.routing import release_slots, route_table
from nonstop.errors import ConfigError, StateError, UsageError
from nonstop.notify import notices
from nonstop.notify.notices import Notice, RolloutRef
from nonstop.plan import bluegreen, roles, warm
from nonstop.plan.model import (
    Action,
    Command,
    Finish,
    Observed,
    RolloutSpec,
    RolloutState,
    RunSmoke,
    ScaleRelease,
    SetWeights,
    action_from_dict,
    action_to_dict,
)
from nonstop.store import RolloutInProgress, RolloutRow, Store
from nonstop.store.desired import DesiredState

TICK = 0.2

COMMANDS: tuple[Command, ...] = ("promote", "promote_full", "pause", "resume", "abort", "rollback")


class MeasurementSource(Protocol):
    """Per-release measurements (default: the router's request stream, RequestStats)."""

    def snapshot(self, release: str, since: float, until: float) -> Measurement:
        """Counts and latency of ``release`` over ``[since, until)``."""

    def observe_table(self, table: RouteTable) -> None:
        """Learn which upstream address belongs to which release."""


@runtime_checkable
class ChargingSource(Protocol):
    """A MeasurementSource that charges the router's own responses to the releases meant to
    serve (RequestStats), knows the whole service's traffic and sizes its history."""

    def observe_weights(self, weights: Mapping[str, int] | None) -> None:
        """The releases meant to serve now, in percent (None: nobody)."""

    def requests(self, since: float, until: float) -> int:
        """Every request the router answered over ``[since, until)``."""

    def retain(self, seconds: float) -> None:
        """Keep at least ``seconds`` of history (the source caps it)."""


@runtime_checkable
class LatencyCountingSource(Protocol):
    """A MeasurementSource that can count requests at or below given latencies (RequestStats),
    so latency checks are judged from counts (``Measurement.latency_le``)."""

    def count_latency_at(self, bounds_ms: Iterable[float]) -> None:
        """Count requests at or below each of ``bounds_ms`` in every snapshot from now on."""


@runtime_checkable
class QuerySource(Protocol):
    """A MeasurementSource that can also answer ``query`` checks (Prometheus)."""

    def query_value(self, template: str, release: str, since: float, until: float) -> QueryValue:
        """The template's value for ``release`` over ``[since, until)``; never raises."""


Slots = dict[str, tuple[str, ...]]
"""Release -> its ready web instances' addresses, in priority order (routing.release_slots)."""


NO_QUERY_PROVIDER = "query checks need [metrics] provider = prometheus"


@dataclass
class DeployRequest:
    release: str
    path: Path
    env: dict[str, str]
    config: dict[str, Any]
    strategy: str | None = None


@dataclass
class Active:
    """The rollout in progress, as the engine holds it between ticks."""

    row: RolloutRow
    spec: RolloutSpec
    state: RolloutState
    planner: ModuleType
    smoke: asyncio.Task[None] | None = field(default=None, repr=False)


def planner_for(strategy: str) -> ModuleType:
    if strategy == "bluegreen":
        return bluegreen
    if strategy == "rolling":
        from nonstop.plan import rolling

        return rolling
    if strategy == "canary":
        from nonstop.plan import canary

        return canary
    raise UsageError(f"unknown strategy {strategy!r}: expected bluegreen, rolling or canary")


RETAIN_SLACK = 60.0
"""Seconds of request history kept beyond the longest window a configuration judges."""


def longest_window(config: NonstopConfig) -> float:
    """Seconds of request history a rollout of ``config`` may judge at once: the watch, the
    short check, canary step pauses and check intervals (canary windows are at most
    5 minutes), plus :data:`RETAIN_SLACK`. The request stream caps it (an hour).

    >>> from nonstop.config.load import validate_config
    >>> longest_window(validate_config({"app": {"name": "a", "command": "a {port}"},
    ...     "watch": {"duration": "30m"}}))
    1860.0
    """
    spans = [float(config.watch.duration), float(config.watch.check_duration)]
    canary = config.strategy.canary
    if canary is not None:
        for step in canary.steps or ():
            if isinstance(step.pause, float | int):
                spans.append(float(step.pause))
            spans += [float(c.interval) for c in step.analysis or ()]
        spans += [float(c.interval) for c in canary.analysis]
    return max(spans) + RETAIN_SLACK


def _ignore(notice: Notice) -> None:
    """No receivers."""


def _same_slots(a: Slots | None, b: Slots | None) -> bool:
    """Equal slots in the same priority order (dicts alone compare equal in any order)."""
    return (a is None) == (b is None) and list((a or {}).items()) == list((b or {}).items())


class Engine:
    def __init__(
        self,
        store: Store,
        instances_factory: Callable[[Engine], InstanceManager],
        router: Router,
        measurements: MeasurementSource,
        state_dir: Path,
        clock: Callable[[], float] = time.time,
        stream: MeasurementSource | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.measurements = measurements
        self.sources = [measurements] if stream in (None, measurements) else [measurements, stream]
        """Everything that learns the route table and who is meant to serve: the analysis
        source, and the router's request stream when analysis reads another one (Prometheus),
        so the agent's /metrics still charges the router's own responses to a release."""
        self.state_dir = state_dir
        self.clock = clock
        self._configs: dict[str, NonstopConfig] = {}
        self.instances = instances_factory(self)
        self.active: Active | None = None
        self.routes: RouteTable | None = None
        self.slots: Slots | None = None
        """The release slots the router last took (None: none yet, or it keeps none)."""
        self.release_slots = False
        """Whether the router serves stamped requests from release slots (the agent sets it
        from ``router.release_slots``; only a :class:`ReleaseSlots` router can)."""
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._router_failures = 0
        self._background: set[asyncio.Task[None]] = set()
        self._quieting: set[str] = set()
        """Kept-warm instances whose quiet step is being delivered now."""
        self.health = Health(clock)
        self.revive_router_in_tick = True
        """False when the agent runs router revival as its own task (it does)."""
        self.notify: Callable[[Notice], None] = _ignore
        """Where rollout notices go (the agent's webhooks); must only enqueue, never wait."""

    # -- helpers -----------------------------------------------------------------------------

    def config_of(self, release: str) -> NonstopConfig:
        if release not in self._configs:
            row = self.store.release(release)
            if row is None:
                raise StateError(f"unknown release {release}")
            self._configs[release] = validate_config(row.config)
        return self._configs[release]

    def emit(self, level: str, message: str) -> None:
        """Record an event; never raises. When the store cannot write (a full disk), the event
        waits in memory, in order, and the agent reports itself degraded until it is written."""
        rollout_id = self.active.row.id if self.active else None
        self.health.keep(PendingEvent(self.clock(), level, message, rollout_id))
        self.flush_events()

    def flush_events(self) -> bool:
        """Write the events kept in memory; True when none is left."""
        pending = self.health.pending
        try:
            while pending:
                event = pending[0]
                self.store.add_event(
                    event.message, level=event.level, rollout_id=event.rollout_id, ts=event.ts
                )
                pending.popleft()
        except Exception as exc:
            self.health.fail("store", f"the state store cannot write: {describe(exc)}")
            return False
        if self.health.ok("store") is not None:
            self.store_recovered()
        return True

    def store_recovered(self) -> None:
        """The store writes again: record every live instance as it is now (a restart while
        it could not write changed a handle the store still has the old one of), then say so."""
        lost = self.health.dropped
        self.health.dropped = 0
        note = f"; {lost} older events were dropped" if lost else ""
        with contextlib.suppress(Exception):
            for live in list(self.instances.live.values()):
                if live.handle is not None and live.state != "stopped":
                    self.store.upsert_instance(
                        live.id,
                        live.release,
                        live.handle.to_dict(),
                        live.state,
                        ready_since=live.ready_since,
                        drain_deadline=live.drain_deadline,
                    )
            self.store.add_event(f"the state store writes again{note}", level="info")

    def wake(self) -> None:
        self._wake.set()

    def _tell(self, make: Callable[[], list[Notice]]) -> None:
        """Hand notices to ``notify``; a failure here is an event, never the rollout's."""
        try:
            for notice in make():
                self.notify(notice)
        except Exception as exc:
            self.emit("warning", f"notifications: {describe(exc)}")

    @property
    def desired(self) -> dict[str, int]:
        """Web replicas wanted per release (from the store's typed desired state)."""
        return self.store.desired_state().replicas

    @property
    def weights(self) -> dict[str, int] | None:
        return self.store.desired_state().weights

    # -- start and recovery ------------------------------------------------------------------

    async def recover(self) -> None:
        """Come back from whatever the previous agent left: adopt instances, resume rollout."""
        await self.router.start()
        await self.instances.adopt()
        row = self.store.running_rollout()
        if row is not None:
            self.active = self._load(row)
            if self.store.get(f"smoke:{row.id}") == "running":
                self.store.put(f"smoke:{row.id}", None)  # the smoke run died with the agent
            self.emit("info", f"resuming rollout {row.id} in phase {self.active.state.phase}")
            await self._replay(self.active)
        await self._sync_routes(force=True)

    async def _replay(self, active: Active) -> None:
        """Finish what the previous agent journalled as intended but may not have done.

        The decision that produced these actions is already persisted (its state moved on), so
        deciding again would not repeat them; replaying is safe because actions are declarative."""
        for entry in self.store.journal(active.row.id):
            if entry["status"] != "intended":
                continue
            action = action_from_dict(entry["action"])
            self.emit("info", f"replaying journalled {action.kind} after a restart")
            await self._execute(active, action)
            self.store.journal_done(entry["id"], "replayed")
            if self.active is None:
                break

    def _retain(self, config: NonstopConfig) -> None:
        """Make the request stream keep the longest window this configuration judges, and count
        the requests at each latency ``max`` it judges."""
        for source in self.sources:
            if isinstance(source, ChargingSource):
                source.retain(longest_window(config))
        # The analysis source counts requests at each latency max (latency from counts).
        if isinstance(self.measurements, LatencyCountingSource):
            self.measurements.count_latency_at(latency_bounds(config.strategy.canary))

    def _load(self, row: RolloutRow) -> Active:
        spec = RolloutSpec(
            strategy=row.strategy,  # type: ignore[arg-type]
            candidate=row.candidate,
            stable=row.stable,
            config=self.config_of(row.candidate),
            rollback=row.rollback,
        )
        state = RolloutState.from_dict(row.state)
        self._retain(spec.config)
        return Active(row, spec, state, planner_for(row.strategy))

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop``. No exception ends the loop (invariant 8): a failing tick is an
        event (once per distinct failure) and a degraded status, and the next tick waits
        longer (backoff up to 10 s) until one succeeds again."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # each tick is isolated; report it and carry on
                if self.health.fail("engine", f"the engine's tick fails: {describe(exc)}"):
                    self.emit("error", f"engine tick failed: {describe(exc)}")
            else:
                if self.health.ok("engine") is not None:
                    self.emit("info", "engine ticks again")
            if self.health.pending:
                self.flush_events()
            self._wake.clear()
            delay = self.health.backoff("engine", TICK, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def tick(self) -> None:
        async with self._lock:
            now = self.clock()
            await self._reconcile(now)
            if self.active is not None:
                await self._advance(self.active, now)
            await self._sync_routes()
            await self._drain(now)
            await self._housekeeping(now)

    # -- reconcile ---------------------------------------------------------------------------

    async def _reconcile(self, now: float) -> None:
        for name, count in self.desired.items():
            release = self.store.release(name)
            if release is not None:
                await self.instances.reconcile(release, count, now)
        for name in self.instances.releases() - set(self.desired):
            for live in self.instances.serving(name):
                self.instances.begin_drain(live, now)
        await self._reconcile_roles(now)

    async def _reconcile_roles(self, now: float) -> None:
        """Run each non-web role where plan/roles.py says: the leading release gets its
        replicas, the others leave once those are ready (all at once, or rolling)."""
        leader = self._leader()
        wanted = set(self.config_of(leader).processes) if leader else set()
        for role in sorted(wanted | self.instances.roles()):
            counts = self.instances.role_counts(role)
            targets = roles.role_targets(leader, self._role_budget(leader, role), counts)
            for name in sorted(set(counts) | set(targets)):
                release = self.store.release(name)
                if release is not None:
                    await self.instances.reconcile(release, targets.get(name, 0), now, role)

    def _leader(self) -> str | None:
        """The release whose non-web roles should run (plan/roles.py)."""
        view = None
        if self.active is not None:
            spec = self.active.spec
            phase = self.active.state.phase
            view = roles.RolloutView(spec.strategy, spec.candidate, spec.stable, phase)
        state = self.store.desired_state()
        return roles.leading_release(view, state.active_release, state.replicas, state.weights)

    def _role_budget(self, leader: str | None, role: str) -> roles.RoleBudget:
        if leader is None:
            return roles.RoleBudget(0)
        config = self.config_of(leader)
        replicas = role_of(config, role).replicas
        if self.active is not None and self.active.spec.strategy == "rolling":
            rolling = config.strategy.rolling
            return roles.RoleBudget.rolling(replicas, rolling.max_surge, rolling.max_unavailable)
        return roles.RoleBudget(replicas)

    def _pending(self, candidate: str) -> dict[str, str]:
        """What the candidate's non-web roles miss while it leads them (plan/roles.py)."""
        if self._leader() != candidate:
            return {}
        config = self.config_of(candidate)
        budgets = {name: roles.RoleBudget(p.replicas) for name, p in config.processes.items()}
        counts = {
            name: self.instances.role_counts(name).get(candidate, roles.RoleCount())
            for name in budgets
        }
        missing = roles.pending(budgets, counts)
        return {candidate: missing} if missing else {}

    # -- rollouts ----------------------------------------------------------------------------

    async def deploy(self, request: DeployRequest) -> RolloutRow:
        async with self._lock:
            releases.check_request(request.release, request.env)
            running = self.store.running_rollout()
            if running is not None:
                raise StateError(
                    f"rollout {running.id} ({running.candidate}) is in progress; wait for it, or "
                    "`nonstop abort` it first"
                )
            try:
                config = validate_config(request.config)
            except ConfigError as exc:
                raise UsageError(str(exc)) from None
            strategy = request.strategy or config.strategy.kind
            planner = planner_for(strategy)
            row = releases.existing_release(self.store, request.release, config, request.env)
            if row is None:
                row = await self._new_release(request, config)
            active = self.store.desired_state().active_release
            if active == request.release:
                raise StateError(f"{request.release} is already the active release")
            if active is None:
                strategy, planner = "bluegreen", bluegreen  # first deploy: start, then switch
            applied = await migrations.expand(
                config, self.state_dir / "releases" / request.release, row.env
            )
            if applied:
                self.emit("info", f"expand migrations applied: {', '.join(applied)}")
            rollout = self._begin(strategy, planner, request.release, active, rollback=False)
            for trap in role_traps(config):
                self.emit("warning", trap)
            return rollout

    async def _new_release(self, request: DeployRequest, config: NonstopConfig) -> Any:
        cwd = releases.copy_release(
            self.state_dir / "releases", request.release, request.path, config
        )
        if config.app.build:
            log = self.state_dir / "logs" / f"build-{request.release}.log"
            await releases.build_release(
                request.release, cwd, request.env, config.app.build, log, timeout=900
            )
        env = releases.merged_env(config, request.env)
        return self.store.add_release(
            request.release, str(cwd), config.app.command, env, request.config
        )

    def _begin(
        self,
        strategy: str,
        planner: ModuleType,
        candidate: str,
        stable: str | None,
        *,
        rollback: bool,
    ) -> RolloutRow:
        spec = RolloutSpec(strategy, candidate, stable, self.config_of(candidate), rollback)  # type: ignore[arg-type]
        self._retain(spec.config)
        state = planner.initial_state(spec, self.clock())
        try:
            row = self.store.start_rollout(
                strategy, candidate, stable, state.to_dict(), rollback=rollback
            )
        except RolloutInProgress as exc:
            raise StateError(f"rollout {exc.rollout_id} is in progress") from None
        self.active = Active(row, spec, state, planner)
        verb = "rollback" if rollback else f"{strategy} rollout"
        self.emit("info", f"{verb} {row.id} started: {stable or 'nothing'} -> {candidate}")
        self._tell(lambda: [notices.started(RolloutRef.of(row.id, spec), self.clock())])
        self.wake()
        return row

    async def rollback(self) -> RolloutRow:
        """Back to the previous release: a weight change while it is warm (invariant 5)."""
        async with self._lock:
            if self.active is not None:
                self.store.put(f"command:{self.active.row.id}", "rollback")
                self.wake()
                return self.active.row
            state = self.store.desired_state()
            previous, active = state.previous_release, state.active_release
            if not previous or previous == active:
                raise StateError("there is no previous release to roll back to")
            return self._begin("bluegreen", bluegreen, previous, active, rollback=True)

    def command(self, command: str) -> RolloutRow:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}: expected one of {', '.join(COMMANDS)}")
        if self.active is None:
            raise StateError(f"no rollout is in progress: nothing to {command.replace('_', ' ')}")
        self.store.put(f"command:{self.active.row.id}", command)
        self.emit("info", f"{command.replace('_', ' ')} requested")
        self.wake()
        return self.active.row

    async def _advance(self, active: Active, now: float) -> None:
        key = f"command:{active.row.id}"
        command = self.store.get(key)
        observed = Observed(
            now=now,
            instances=self.instances.views(),
            weights=self.weights,
            measurements=self._measure(active, now),
            traffic=self._traffic(active, now),
            queries=self._queries(active, now),
            smoke=self._smoke_result(active),
            command=command,
            pending=self._pending(active.spec.candidate),
        )
        decision = active.planner.decide(active.spec, active.state, observed)
        todo = [a for a in decision.actions if self._changes_something(active, a)]
        if decision.state == active.state and not todo and not decision.events and not command:
            return
        with self.store.transaction():
            self.store.save_rollout_state(active.row.id, decision.state.to_dict())
            entries = [self.store.journal_intent(active.row.id, action_to_dict(a)) for a in todo]
            for event in decision.events:
                self.store.add_event(event, rollout_id=active.row.id)
            if command:
                self.store.put(key, None)
        before, active.state = active.state, decision.state
        ref = RolloutRef.of(active.row.id, active.spec)
        self._tell(lambda: notices.transition(ref, before, decision.state, decision.events, now))
        for action, entry in zip(todo, entries, strict=True):
            crash_point(f"intent:{action.kind}")
            await self._execute(active, action)
            self.store.journal_done(entry)
            crash_point(f"done:{action.kind}")

    def _measure(self, active: Active, now: float) -> dict[str, Measurement]:
        since = active.state.phase_started_at
        names = {active.spec.candidate, *([active.spec.stable] if active.spec.stable else [])}
        return {name: self.measurements.snapshot(name, since, now) for name in names}

    def _traffic(self, active: Active, now: float) -> int | None:
        """The whole service's requests over the phase's window, when the source knows."""
        if isinstance(self.measurements, ChargingSource):
            return self.measurements.requests(active.state.phase_started_at, now)
        return None

    def _queries(self, active: Active, now: float) -> dict[str, QueryValue]:
        """The candidate's value of each query check the planner may judge now, over the same
        window as ``_measure``; with a source that cannot run queries, an inconclusive value."""
        wanted = getattr(active.planner, "queries", None)
        if wanted is None:
            return {}
        since, release = active.state.phase_started_at, active.spec.candidate
        source = self.measurements
        if isinstance(source, QuerySource):
            return {
                t: source.query_value(t, release, since, now)
                for t in wanted(active.spec, active.state)
            }
        return {
            t: QueryValue(release, since, now, None, NO_QUERY_PROVIDER)
            for t in wanted(active.spec, active.state)
        }

    def _smoke_result(self, active: Active) -> str | None:
        value = self.store.get(f"smoke:{active.row.id}")
        return None if value in (None, "running") else str(value)

    def _changes_something(self, active: Active, action: Action) -> bool:
        if isinstance(action, ScaleRelease):
            return self.desired.get(action.release, 0) != action.replicas or (
                action.replicas == 0 and action.release in self.desired
            )
        if isinstance(action, SetWeights):
            current = self.weights
            wanted = dict(action.weights) if action.weights is not None else None
            return current != wanted
        if isinstance(action, RunSmoke):
            return self.store.get(f"smoke:{active.row.id}") is None
        return True

    async def _execute(self, active: Active, action: Action) -> None:
        if isinstance(action, ScaleRelease):
            state = self.store.desired_state()
            if action.replicas:
                state.replicas[action.release] = action.replicas
            else:
                state.replicas.pop(action.release, None)
            self.store.save_desired_state(state)
            await self._reconcile(self.clock())
        elif isinstance(action, SetWeights):
            with self.store.transaction():
                self._warm_quiet_at_switch(active.spec.candidate, action.weights)
                state = self.store.desired_state()
                state.weights = dict(action.weights) if action.weights is not None else None
                self.store.save_desired_state(state)
            await self._sync_routes()
        elif isinstance(action, RunSmoke):
            self.store.put(f"smoke:{active.row.id}", "running")
            active.smoke = asyncio.create_task(self._run_smoke(active, action.release))
        else:
            self._finish(active, action)

    def _finish(self, active: Active, finish: Finish) -> None:
        spec, now = active.spec, self.clock()
        with self.store.transaction():
            self.store.finish_rollout(active.row.id, finish.outcome, finish.reason)
            if finish.outcome == "completed":
                self._promote_records(spec, now)
            level = "info" if finish.outcome == "completed" else "error"
            label = "rollback" if spec.rollback else "rollout"
            message = f"{label} {active.row.id} {finish.outcome.replace('_', ' ')}: {finish.reason}"
            self.store.add_event(message, level=level, rollout_id=active.row.id)
        crash_point("finish")
        self._tell(lambda: [notices.finished(RolloutRef.of(active.row.id, spec), finish, now)])
        self.active = None
        retention.after_rollout(self, spec.config)
        if finish.outcome == "completed" and not spec.rollback and spec.config.migrations:
            release_dir = self.state_dir / "releases" / spec.candidate
            row = self.store.release(spec.candidate)
            task = asyncio.create_task(
                migrations.backfill(spec.config, release_dir, row.env if row else {}, self.emit)
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _promote_records(self, spec: RolloutSpec, now: float) -> None:
        """The candidate is the active release; the old one stays warm for keep_previous."""
        state = self.store.desired_state()
        state.active_release = spec.candidate
        desired = state.replicas
        desired.setdefault(spec.candidate, spec.replicas)
        retire = state.retire
        retire.pop(spec.candidate, None)
        if spec.stable and spec.stable != spec.candidate:
            state.previous_release = spec.stable
            if spec.stable in desired:
                keep = spec.config.strategy.bluegreen.keep_previous
                retire[spec.stable] = now + keep
                self._quiet_when_drained(spec.stable, spec.candidate, now)
        for name in list(desired):
            if name not in (spec.candidate, spec.stable):
                desired.pop(name)  # anything older than the previous release goes
        # Only releases that still have instances wait to retire; the candidate has it all.
        state.retire = {name: at for name, at in retire.items() if name in desired}
        state.weights = {spec.candidate: 100}
        self.store.save_desired_state(state)
        self._keep_warm_quiet(set(desired))

    def _warm_quiet_at_switch(self, candidate: str, weights: Mapping[str, int] | None) -> None:
        """A release the switch takes out of the table (the candidate aside) gets its quiet
        step at its drain deadline; one the switch routes to again loses it (plan/warm.py)."""
        before = self.weights or {}
        after = dict(weights or {})
        entries = warm.load(self.store.get("warm_quiet"))
        left = warm.switched(entries, before, after, candidate, self.clock(), self._drain_of)
        if left != entries:
            self.store.put("warm_quiet", warm.dump(left))

    def _drain_of(self, release: str) -> float:
        return float(self.config_of(release).app.drain_timeout)

    def _quiet_when_drained(self, kept: str, candidate: str, now: float) -> None:
        """The kept-warm release's web instances get their quiet step at its drain deadline
        (set at the switch already, else now); the new active release has none."""
        entries = warm.load(self.store.get("warm_quiet"))
        entries.pop(candidate, None)
        entries.setdefault(kept, warm.WarmQuiet(now + self._drain_of(kept)))
        self.store.put("warm_quiet", warm.dump(entries))

    def _keep_warm_quiet(self, kept: set[str]) -> None:
        entries = warm.load(self.store.get("warm_quiet"))
        left = warm.keep_only(entries, kept)
        if left != entries:
            self.store.put("warm_quiet", warm.dump(left))

    async def _run_smoke(self, active: Active, release: str) -> None:
        config = active.spec.config.strategy.bluegreen
        command = config.smoke or "true"
        ready = [h for h in self.instances.ready_handles() if h.release == release]
        key = f"smoke:{active.row.id}"
        if not ready:
            self.store.put(key, "failed: no ready instance to test")
            self.wake()
            return
        row = self.store.release(release)
        cwd = row.cwd if row else None
        log = self.state_dir / "logs" / f"smoke-{active.row.id}.log"
        env = {**os.environ, "NONSTOP_TARGET_URL": f"http://{ready[0].address}"}
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_shell(
                command, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True
            )
            try:
                code = await asyncio.wait_for(process.wait(), config.smoke_timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
                code = None
        if code == 0:
            result = "passed"
        else:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            why = "timed out" if code is None else f"exit code {code}"
            result = f"failed ({why}): {tail[0]}".rstrip(": ")
        self.store.put(key, result)
        self.wake()

    # -- routing -----------------------------------------------------------------------------

    def route_table(self) -> RouteTable:
        return route_table(self.weights, self.instances.ready_handles())

    def release_slots_now(self, active: str | None) -> Slots | None:
        """The release slots the router should hold now (routing.release_slots); None when it
        keeps none. ``active``: the stored active release; the candidate is the rollout's."""
        if not self.release_slots or not isinstance(self.router, ReleaseSlots):
            return None
        candidate = self.active.spec.candidate if self.active is not None else None
        return release_slots(active, candidate, self.instances.ready_handles())

    async def _sync_routes(self, *, force: bool = False) -> None:
        """Give the router the table, then the release slots, when either changed (``force``:
        anyway, after a router restart or an agent restart). Both are remembered only once
        both were taken: until then :meth:`_routed` keeps the older, larger set of addresses."""
        state = self.store.desired_state()  # read once per tick, for both
        self._observe_weights(state)
        table = self.route_table()
        slots = self.release_slots_now(state.active_release)
        if table == self.routes and _same_slots(slots, self.slots) and not force:
            return
        slotted = self._slot_table(slots)
        for source in self.sources:
            source.observe_table(table)
            if slotted.upstreams:  # a held or warm release answers through its slot
                source.observe_table(slotted)
        router = self.router
        await router.apply(table)
        if slots is not None and isinstance(router, ReleaseSlots):
            await router.apply_slots(slots)
        self.routes, self.slots = table, slots

    def _slot_table(self, slots: Slots | None) -> RouteTable:
        """The slots' instances as upstreams, so the request stream charges a request a slot
        served to the instance's release although the table gives that release no weight."""
        addresses = {a for members in (slots or {}).values() for a in members}
        members = [h for h in self.instances.ready_handles() if h.address in addresses]
        return route_table(None, members)

    def _observe_weights(self, state: DesiredState) -> None:
        """Tell the request stream who is meant to serve: the stored weights, or with none the
        active release. The router's own responses (no upstream tried) are charged to them."""
        charging = [s for s in self.sources if isinstance(s, ChargingSource)]
        if not charging:
            return
        weights = state.weights
        if weights is None:
            active = state.active_release
            weights = {active: 100} if active else None
        for source in charging:
            source.observe_weights(weights)

    async def _drain(self, now: float) -> None:
        if not any(live.state == "draining" for live in self.instances.live.values()):
            return
        await self.instances.drain_step(await self.router.in_flight(), self._routed(), now)

    def _routed(self) -> set[str]:
        """Every address the router may still send a new request to: the last table it took
        and every release slot it took. A draining instance in either is busy (invariant 2).

        An instance leaves a slot the way it leaves the table, in this order (a kept-warm
        release retired after ``keep_previous``, a rollback or abort scaling the candidate to
        0, a scale-down alike):

        1. tick N, ``_reconcile``: the instance turns *draining*, so it is no longer ready
           and neither ``route_table`` nor ``release_slots`` lists it;
        2. tick N, ``_sync_routes``: ``apply`` then ``apply_slots`` without it; only once the
           router took both does ``self.slots`` forget it (a failed call leaves the old slots
           here, so step 3 keeps waiting);
        3. tick N, ``_drain``: it is in neither the table nor a slot, so it is busy only with
           its open requests, which ``in_flight`` sums over the slot backends too; it stops
           when they are 0 (after DRAIN_SETTLE) or at its drain deadline.

        Example: v1 kept warm, a request pinned to it by ``X-Nonstop-Release: v1`` takes 4 s,
        keep_previous ends 1 s into it: v1-1 drains at 1 s, leaves its slot in the same tick,
        shows 1 in flight until 4 s and stops then, with the request answered."""
        routed = {u.address for u in self.routes.upstreams} if self.routes else set()
        for addresses in (self.slots or {}).values():
            routed.update(addresses)
        return routed

    # -- housekeeping ------------------------------------------------------------------------

    async def _housekeeping(self, now: float) -> None:
        state = self.store.desired_state()
        due = [name for name, at in state.retire.items() if at <= now]
        involved = {self.active.spec.candidate, self.active.spec.stable} if self.active else set()
        for name in due:
            if name in involved:
                continue
            if state.replicas.pop(name, None) is not None:
                self.emit("info", f"retiring {name}: keep_previous elapsed")
            state.retire.pop(name)
            self.store.save_desired_state(state)
        gone = [n for n in state.retire if n not in state.replicas and n not in involved]
        if gone:  # scaled to 0 by a later rollout: nothing left to retire
            state.retire = {n: at for n, at in state.retire.items() if n not in gone}
            self.store.save_desired_state(state)
        self._keep_warm_quiet(set(state.replicas))
        # Only a rollback's own candidate waits: the previous release is quieted during the
        # watch too, its streams' closes are not traffic (decision 0510).
        self._quiet_warm({self.active.spec.candidate} if self.active else set(), now)
        if self.revive_router_in_tick:
            await self.revive_router()

    def _quiet_warm(self, involved: Set[str | None], now: float) -> None:
        """Send the quiet step to kept-warm web instances whose drain deadline passed, once
        each (plan/warm.py); the record is written once it is delivered."""
        entries = warm.load(self.store.get("warm_quiet"))
        if not entries:
            return
        lives = {
            live.id: live
            for live in self.instances.live.values()
            if live.role == WEB_ROLE and live.state == "ready" and live.release in entries
        }
        candidates = [(i, live.release) for i, live in lives.items() if i not in self._quieting]
        for instance in warm.due(entries, candidates, involved, now):
            if self.instances.quiet_warm(lives[instance], self._quiet_sent):
                self._quieting.add(instance)

    def _quiet_sent(self, live: Live) -> None:
        """Record a delivered quiet step; a store that cannot write now means it is sent again
        later (at least once), never an error in the sending task."""
        self._quieting.discard(live.id)
        with contextlib.suppress(Exception):
            stored = warm.load(self.store.get("warm_quiet"))
            entries = warm.mark_sent(stored, live.release, live.id)
            self.store.put("warm_quiet", warm.dump(entries))

    async def revive_router(self) -> None:
        """Restart the router when it does not answer, and give it the routing table."""
        if await self.router.alive():
            return
        self._router_failures += 1
        self.emit("error", "router is not answering; restarting it")
        await self.router.start()
        await self._sync_routes(force=True)

    # -- status ------------------------------------------------------------------------------

    def _instances_status(self) -> list[dict[str, Any]]:
        """Each instance as stored, with why it cannot serve (a crash loop included)."""
        views = {view.id: view for view in self.instances.views()}
        rows = []
        for live in self.instances.live.values():
            row = live.to_dict(self.instances.facts(live))
            row["check"] = check_kind(self.instances.config_of(live.release), live.role)
            view = views.get(live.id)
            if view is not None and view.failed:
                row["failed"] = view.failed
            rows.append(row)
        return rows

    def status(self) -> dict[str, Any]:
        rollout = None
        if self.active is not None:
            active = self.active
            now = self.clock()
            rollout = {
                **active.row.to_dict(),
                "phase": active.state.phase,
                "step": active.state.step,
                "paused": active.state.paused,
                "state": active.state.to_dict(),
                "measurements": {
                    name: m.to_dict() for name, m in self._measure(active, now).items()
                },
            }
        state = self.store.desired_state()
        return {
            "active_release": state.active_release,
            "previous_release": state.previous_release,
            "weights": state.weights,
            "desired": state.replicas,
            "retire": state.retire,
            "warm_quiet": self.store.get("warm_quiet", {}),
            "instances": self._instances_status(),
            "routes": [
                {
                    "instance": u.instance_id,
                    "release": u.release,
                    "address": u.address,
                    "weight": u.weight,
                }
                for u in (self.routes.upstreams if self.routes else ())
            ],
            "slots": (
                {release: list(members) for release, members in self.slots.items()}
                if self.slots is not None
                else None
            ),
            "rollout": rollout,
            "releases": [r.name for r in self.store.releases()],
        }
