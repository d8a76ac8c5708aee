"""Rolling update: replace the old release's instances with new ones a few at a time.

Phases (each decide() returns early while its condition is not met, STYLE.md #2)::

    rolling ──all new available, old at 0──> watching ──duration over──> completed
       │                                        │
       └─deadline / failed / abort──> rolling_back <──errors / abort──┘
                                          │
                                          └─old ready again──> rolled_back

Budget (Kubernetes semantics, :func:`nonstop.config.units.resolve_count`): ``max_surge`` rounds
up, ``max_unavailable`` rounds down. At most ``replicas + surge`` instances exist (draining ones
included: they still hold memory and a port), and at least ``replicas - unavailable`` are
*available* (ready, not draining, ready for ``min_ready`` seconds) at every moment
(invariant 3). Both 0 would forbid any move; Kubernetes rejects it, here it means surge 1 (an
event says so), the gentlest budget that still makes progress.

Each decide() moves two declarative targets kept in ``state.data``: ``new`` only grows, ``old``
only shrinks, so replaying a decision never undoes a step (invariant 4). Traffic is shared
equally by every ready instance of the two releases (:func:`equal_shares`); an instance that is
not ready gets none (invariant 1).

- Scale up: ``new += min(replicas + surge - occupied, replicas - new)`` where ``occupied`` counts
  both targets (or what is really serving, when the engine lags) plus every draining instance.
- Scale down, worst case: the engine may drain an *available* old instance for every one it
  removes. ``remaining`` = available old minus old instances already asked to leave;
  ``slack = remaining + available_new - min_available``. ``slack >= remaining``: the new
  release alone covers the minimum, all old may go. Otherwise ``max(0, slack)`` old may go.

Worked examples (``t`` is a decide() call, not seconds)::

    replicas 5, max_surge 1, max_unavailable 0: at most 6 instances, at least 5 available
      t1  old 5 ready, new 0            -> new 1          6 running, capacity 5
      t2  new 1 ready                   -> old 4          slack = 5 + 1 - 5 = 1; capacity 5
      t3  old 4 + 1 draining, new 1     -> (wait)         occupied 4 + 1 + 1 = 6
      t4  drained; old 4, new 1         -> new 2          6 running again
      ...                               -> old 0, new 5   then the watch starts

    replicas 10, max_surge 25% (2.5 -> 3), max_unavailable 25% (2.5 -> 2): at most 13, at least 8
      t1  old 10 ready, new 0           -> new 3, old 8   slack = 10 + 0 - 8 = 2
      t2  old 8 + 2 draining, new 3     -> (wait)         occupied 8 + 3 + 2 = 13, capacity 8
      t3  drained, new 3 ready          -> new 5, old 5   slack = 8 + 3 - 8 = 3

    replicas 4, max_surge 0, max_unavailable 1: never more than 4, at least 3
      t1  old 4 ready                   -> old 3          nothing may start until one is gone

Rollback (progress deadline passed, a new instance failed, the watch saw errors, or an operator
said abort/rollback) starts the old release back to ``replicas`` at once, ignoring the surge
budget: going back should be fast and needs nothing built (invariant 5). Only once every old
instance is ready does traffic move (``SetWeights({old: 100})``) and the new release drain to 0,
so capacity never dips on the way back. If the old release cannot come back, both keep serving
and the rollout ends ``aborted`` with the reason: an operator decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from nonstop.analysis.measurement import Measurement
from nonstop.analysis.watch import RESTART, watch_end, watch_summary, watch_verdict
from nonstop.config.units import resolve_count
from nonstop.plan.model import (
    Action,
    Decision,
    Finish,
    Observed,
    RolloutSpec,
    RolloutState,
    ScaleRelease,
    SetWeights,
    metrics_lack,
    restarts,
    stalled,
    watch_again,
)

ROLLING, WATCHING, ROLLING_BACK = "rolling", "watching", "rolling_back"
TICK = 0.5


@dataclass(frozen=True, slots=True)
class Budget:
    replicas: int
    surge: int
    unavailable: int
    note: str = ""
    """Why the configured budget was adjusted (both 0), or ""."""

    @property
    def max_total(self) -> int:
        return self.replicas + self.surge

    @property
    def min_available(self) -> int:
        return max(0, self.replicas - self.unavailable)


def budget(spec: RolloutSpec) -> Budget:
    """The instance budget of ``spec``: counts from ``max_surge`` / ``max_unavailable``.

    >>> from nonstop.config.load import validate_config
    >>> config = validate_config({"app": {"name": "a", "command": "a {port}", "replicas": 10},
    ...     "strategy": {"kind": "rolling",
    ...                  "rolling": {"max_surge": "25%", "max_unavailable": "25%"}}})
    >>> plan = budget(RolloutSpec("rolling", "v2", "v1", config))
    >>> plan.surge, plan.unavailable, plan.max_total, plan.min_available
    (3, 2, 13, 8)
    """
    rolling = spec.config.strategy.rolling
    replicas = spec.replicas
    surge = resolve_count(rolling.max_surge, replicas, round_up=True)
    unavailable = resolve_count(rolling.max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        note = (
            f"max_surge {rolling.max_surge} and max_unavailable {rolling.max_unavailable} are "
            f"both 0 for {replicas} replicas; using max_surge 1"
        )
        return Budget(replicas, 1, 0, note)
    return Budget(replicas, surge, unavailable)


def initial_state(spec: RolloutSpec, now: float) -> RolloutState:
    return RolloutState(phase=ROLLING, phase_started_at=now)


def decide(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    if state.phase in (ROLLING, WATCHING) and observed.command in ("abort", "rollback"):
        return _roll_back(spec, state, observed, f"{observed.command} requested by operator")
    if state.phase == ROLLING:
        return _rolling(spec, state, observed)
    if state.phase == WATCHING:
        return _watching(spec, state, observed)
    if state.phase == ROLLING_BACK:
        return _rolling_back(spec, state, observed)
    raise ValueError(f"rolling update has no phase {state.phase!r}")


def available(observed: Observed, release: str | None, min_ready: float) -> int:
    """Ready serving instances of ``release`` that have been ready for ``min_ready`` seconds."""
    if release is None:
        return 0
    if min_ready <= 0:
        return observed.ready(release)
    return observed.ready(release, since=observed.now - min_ready)


def _rolling(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    state, events = _start(spec, state, observed)
    state, command_events = _command(state, observed)
    events += command_events
    failed = observed.failed(spec.candidate)
    if failed:
        first = failed[0]
        reason = f"{first.id} did not become ready: {first.failed}"
        return _roll_back(spec, state, observed, reason, events)
    rolling = spec.config.strategy.rolling
    data = dict(state.data)
    if not state.paused:
        old, new, step_events = _step(spec, budget(spec), data, observed)
        data.update(old=old, new=new)
        events += step_events
    state, stalled = _progress(spec, state, data, observed)
    if stalled:
        return _roll_back(spec, state, observed, stalled, events)
    new_available = available(observed, spec.candidate, rolling.min_ready)
    if data["old"] == 0 and data["new"] == spec.replicas and new_available >= spec.replicas:
        return _rolled(
            spec,
            state,
            observed,
            (*events, f"{spec.candidate} available ({new_available}/{spec.replicas})"),
        )
    return Decision(
        state, _hold(spec, data, observed), events, wake_in=1.0 if state.paused else TICK
    )


def _start(
    spec: RolloutSpec, state: RolloutState, observed: Observed
) -> tuple[RolloutState, tuple[str, ...]]:
    """First call: record where the old release stands (its count may differ from replicas)."""
    if "old" in state.data:
        return state, ()
    plan = budget(spec)
    old = len(observed.serving(spec.stable)) if spec.stable else 0
    data = {
        "old": old,
        "new": len(observed.serving(spec.candidate)),
        "progress_at": observed.now,
        "mark": None,
    }
    events = (
        f"rolling {spec.stable or 'nothing'} ({old}) -> {spec.candidate} ({spec.replicas}): "
        f"at most {plan.max_total} instances, at least {plan.min_available} available",
    )
    return _with(state, data), ((plan.note,) if plan.note else ()) + events


def _command(state: RolloutState, observed: Observed) -> tuple[RolloutState, tuple[str, ...]]:
    command = observed.command
    if command == "pause" and not state.paused:
        return _with(state, {}, paused=True), ("paused by operator",)
    if command == "resume" and state.paused:
        # Time spent paused is not "no progress" (Kubernetes does the same).
        return _with(state, {"progress_at": observed.now}, paused=False), ("resumed by operator",)
    if command is None or command in ("abort", "rollback"):
        return state, ()
    return state, (f"{command} ignored: {_ignored(command, state)}",)


def _ignored(command: str, state: RolloutState) -> str:
    if command in ("pause", "resume"):
        return "already paused" if state.paused else "not paused"
    return "a rolling update has no steps to promote; it proceeds on its own"


def _step(
    spec: RolloutSpec, plan: Budget, data: dict[str, Any], observed: Observed
) -> tuple[int, int, tuple[str, ...]]:
    """One move of both targets within the budget (see the module docstring for the math)."""
    min_ready = spec.config.strategy.rolling.min_ready
    old_release, new_release = spec.stable, spec.candidate
    old, new = int(data["old"]), int(data["new"])
    events: list[str] = []
    healthy_old = _healthy(observed, old_release)
    failed_old = sum(1 for i in observed.serving(old_release) if i.failed) if old_release else 0
    draining = observed.draining(new_release) + (
        observed.draining(old_release) if old_release else 0
    )
    # A failed old instance holds no capacity: one more new may start in its place.
    occupied = (
        max(old - failed_old, healthy_old) + max(new, _healthy(observed, new_release)) + draining
    )
    grow = min(plan.max_total - occupied, spec.replicas - new)
    if grow > 0:
        new += grow
        events.append(
            f"starting {grow} {new_release} ({new}/{spec.replicas}), "
            f"{occupied + grow} instances of at most {plan.max_total}"
        )
    if old > 0 and old_release is not None:
        leaving = max(0, len(observed.serving(old_release)) - old)
        remaining = max(0, available(observed, old_release, min_ready) - leaving)
        new_available = available(observed, new_release, min_ready)
        slack = remaining + new_available - plan.min_available
        shrink = old if slack >= remaining else max(0, min(old, slack))
        if shrink > 0:
            old -= shrink
            events.append(
                f"draining {shrink} {old_release} ({old} left): {remaining} + {new_available} "
                f"available, at least {plan.min_available} must stay"
            )
    return old, new, tuple(events)


def _healthy(observed: Observed, release: str | None) -> int:
    """Serving instances that hold (or will hold) capacity; failed ones are not counted."""
    if release is None:
        return 0
    return sum(1 for i in observed.serving(release) if not i.failed)


def _progress(
    spec: RolloutSpec, state: RolloutState, data: dict[str, Any], observed: Observed
) -> tuple[RolloutState, str]:
    """Record progress (a target moved, or one more new instance became available); return a
    reason when there has been none for ``progress_deadline`` seconds."""
    rolling = spec.config.strategy.rolling
    deadline = spec.progress_deadline
    mark = [data["old"], data["new"], available(observed, spec.candidate, rolling.min_ready)]
    if state.paused or mark != data.get("mark"):
        data.update(mark=mark, progress_at=observed.now)
        return _with(state, data), ""
    state = _with(state, data)
    idle = observed.now - float(data["progress_at"])
    if idle <= deadline:
        return state, ""
    waiting = spec.replicas - mark[2]
    return state, (
        f"rolling: no progress for {idle:.0f}s (progress_deadline {deadline:g}s): "
        f"{spec.candidate} has {mark[2]}/{spec.replicas} available, {waiting} not ready"
    )


def equal_shares(spec: RolloutSpec, observed: Observed) -> SetWeights:
    """Traffic split in proportion to ready instances: an equal share for each.

    Spelled out per release rather than ``SetWeights(None)``, which would also give a share to
    any third release the engine keeps warm (a blue-green deploy's ``keep_previous``).

    >>> from nonstop.config.load import validate_config
    >>> from nonstop.plan.model import InstanceView
    >>> config = validate_config({"app": {"name": "a", "command": "a {port}", "replicas": 5}})
    >>> ready = (InstanceView("v1-1", "v1", ready=True),) * 5 + (InstanceView("v2-1", "v2", True),)
    >>> equal_shares(RolloutSpec("rolling", "v2", "v1", config), Observed(0, ready)).weights
    {'v1': 83, 'v2': 17}
    """
    new = observed.ready(spec.candidate)
    old = observed.ready(spec.stable) if spec.stable is not None else 0
    if spec.stable is None or (new > 0 and old == 0):
        return SetWeights({spec.candidate: 100})
    if new == 0:
        return SetWeights({spec.stable: 100})
    share = min(99, max(1, round(100 * new / (new + old))))
    return SetWeights({spec.stable: 100 - share, spec.candidate: share})


def _hold(spec: RolloutSpec, data: Mapping[str, Any], observed: Observed) -> tuple[Action, ...]:
    """The current targets, restated every call so a restarted engine converges on them."""
    actions: list[Action] = [
        equal_shares(spec, observed),
        ScaleRelease(spec.candidate, int(data["new"])),
    ]
    if spec.stable is not None:
        actions.append(ScaleRelease(spec.stable, int(data["old"])))
    return tuple(actions)


def _rolled(
    spec: RolloutSpec, state: RolloutState, observed: Observed, events: tuple[str, ...]
) -> Decision:
    # Every old instance is leaving: all traffic is the new release's, and the stored weights
    # say so (equal shares computed now would still count old instances not yet draining).
    actions = (SetWeights({spec.candidate: 100}), *_hold(spec, state.data, observed)[1:])
    if spec.rollback or spec.stable is None or spec.config.watch.duration <= 0:
        done = Finish("completed", f"{spec.candidate} serves all traffic")
        return Decision(state.enter("completed", observed.now), (*actions, done), events)
    watch = spec.config.watch
    return Decision(
        state.enter(WATCHING, observed.now),
        actions,
        (*events, f"watching {spec.candidate} for {watch.duration:g}s"),
        wake_in=1.0,
    )


def _watching(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    events: tuple[str, ...] = ()
    if observed.command is not None:
        events = (f"{observed.command} ignored: the watch only judges; abort rolls back",)
    watch = spec.config.watch
    failed = observed.failed(spec.candidate)
    if failed:
        reason = f"watch: {failed[0].id} {failed[0].failed}"
        return _roll_back(spec, state, observed, reason, events)
    measured = observed.measurements.get(spec.candidate) or Measurement(
        spec.candidate, state.phase_started_at, observed.now
    )
    verdict = watch_verdict(watch, measured)
    if verdict.outcome == "fail":
        return _roll_back(spec, state, observed, verdict.reason, events)
    if observed.now - state.phase_started_at < watch.duration:
        return Decision(state, events=events, wake_in=1.0)
    verdict = watch_end(watch, measured, observed.traffic, restarts(state), metrics_lack(spec))
    if verdict.outcome == "fail":
        return _roll_back(spec, state, observed, verdict.reason, events)
    if verdict.check == RESTART:
        again = f"{verdict.reason}; watching {spec.candidate} again for {watch.duration:g}s"
        watching = watch_again(state).enter(WATCHING, observed.now)
        return Decision(watching, events=(*events, again), wake_in=1.0)
    done = Finish("completed", f"{spec.candidate} serves all traffic ({watch_summary(measured)})")
    return Decision(state.enter("completed", observed.now), (done,), (*events, done.reason))


def _roll_back(
    spec: RolloutSpec,
    state: RolloutState,
    observed: Observed,
    reason: str,
    events: tuple[str, ...] = (),
) -> Decision:
    """Start going back: the old release to full strength first; nothing stops yet."""
    if spec.stable is None:
        # A first deploy has nothing to go back to: stop what this rollout started.
        done = Finish("aborted", reason)
        actions = (ScaleRelease(spec.candidate, 0), done)
        return Decision(
            state.enter("aborted", observed.now), actions, (*events, f"{reason}; aborted")
        )
    back = _with(state.enter(ROLLING_BACK, observed.now, paused=False), {"reason": reason})
    events = (*events, f"{reason}; rolling back: starting {spec.stable} to {spec.replicas}")
    return Decision(
        back, (equal_shares(spec, observed), ScaleRelease(spec.stable, spec.replicas)), events, TICK
    )


def _rolling_back(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    assert spec.stable is not None
    reason = str(state.data.get("reason", "rolling back"))
    events: tuple[str, ...] = ()
    if observed.command is not None:
        events = (f"{observed.command} ignored: already rolling back",)
    failed = observed.failed(spec.stable)
    if failed:
        first = failed[0]
        why = (
            f"{reason}; could not restore {spec.stable}: {first.id} did not become ready: "
            f"{first.failed}; {spec.candidate} keeps serving"
        )
        done = Finish("aborted", why)
        return Decision(
            state.enter("aborted", observed.now),
            (equal_shares(spec, observed), done),
            (*events, why),
        )
    restore = ScaleRelease(spec.stable, spec.replicas)
    ready = observed.ready(spec.stable)
    late = stalled(spec, ROLLING_BACK, state.phase_started_at, observed, spec.stable, spec.replicas)
    if late:
        why = f"{reason}; could not restore {spec.stable}: {late}; {spec.candidate} keeps serving"
        done = Finish("aborted", why)
        return Decision(
            state.enter("aborted", observed.now),
            (equal_shares(spec, observed), done),
            (*events, why),
        )
    if ready < spec.replicas:
        return Decision(state, (equal_shares(spec, observed), restore), events, wake_in=TICK)
    # Every old instance is ready: move all traffic, then drain the new release (invariant 2).
    actions = (
        restore,
        SetWeights({spec.stable: 100}),
        ScaleRelease(spec.candidate, 0),
        Finish("rolled_back", reason),
    )
    back = f"{spec.stable} ready ({ready}/{spec.replicas}); switched traffic back; rolled back"
    return Decision(state.enter("rolled_back", observed.now), actions, (*events, back))


def _with(state: RolloutState, changes: dict[str, Any], **fields: Any) -> RolloutState:
    return replace(state, data={**state.data, **changes}, **fields)
