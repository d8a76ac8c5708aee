"""Canary: give the new release a growing share of traffic, step by step, judged all the way.

Phases (each decide() returns early while its condition is not met, STYLE.md #2)::

    scaling ──canary ready──> step ──pause over, analysis passed──> next step (scaling or step)
       │                        │
       │                        └──after the last step──> promoting ──ready──> watching ──> done
       └── any failure, from any phase ──> rolled_back (aborted if no traffic ever reached it)

Steps come from ``strategy.canary.steps`` or its ``preset``. A step may set a ``weight``, wait a
``pause`` (a duration, or ``{}`` for ``nonstop promote``) and run ``analysis`` checks; all three
when it has them, in that order:

1. ``scaling``: the canary scales to ``max(1, ceil(replicas * weight / 100))`` instances while
   the stable release keeps ``replicas``; no weight changes until they are all ready
   (invariant 1). Then ``SetWeights({stable: 100 - w, canary: w})``; the step begins at the
   first decide() that sees the router serving those weights (``observed.weights``).
2. ``step``: a measurement window starts here (the engine counts since ``phase_started_at``).
   Windows are back to back, each as long as the shortest check ``interval`` (at most 5
   minutes: the request stream keeps 15), and begin on a whole second, the stream's
   resolution, so every number judged is at this step's weight and no request is judged twice.
   The data plane is checked first (``weight_verdict``: the canary's measured share, over the
   windows since the weight was set, must match it within ``weight_tolerance``): until it
   passes no threshold check is evaluated, and if it fails the rollout aborts - a router that
   does not do what it is told makes every later number meaningless. Each check (the step's
   own and the background ``analysis``) judges, every ``interval``, the windows closed since
   it last judged; ``failure_limit`` therefore counts failing intervals, not the same early
   error seen again in a growing window.
   The step ends when its pause is over and its own checks passed; a failed check ends the
   rollout at once; a check without enough data for ``inconclusive_limit`` windows in a row
   pauses the rollout for a person (``nonstop promote`` or ``resume`` continues). An error
   rate judged with a confidence is judged once more over the step's whole data when the
   pause is over (``conclude``); if that cannot tell it from ``max`` the step measures on, as
   long again as the pause (at least ``inconclusive_limit`` windows), then pauses for a person
   with the reason (``undecided = "pass"`` on the check lets the step end instead, and the
   event says the rate was not shown above ``max``).
3. Throughout ``scaling``, ``step`` and ``promoting``, the sequential test compares the
   canary's error rate with the stable's over the same window at every decide()
   (``nonstop.analysis.sequential``). It needs no set weight (it conditions on the measured
   request counts), so it runs before the data plane is verified: a bad canary is stopped
   after a handful of errors, not after a window. It learns nothing from a window without
   stable requests (or one it must skip); after :data:`SEQUENTIAL_IDLE` seconds of that an
   event says so, and its last verdict carries the reason for ``nonstop explain``. Not a
   rollback: the threshold checks still judge.

After the last step: the canary scales to ``replicas`` (``promoting``), gets all traffic, is
watched (``watch``), then the stable release scales to 0 and the rollout completes.

Every phase that waits for instances (``scaling``, ``promoting``) gives up after
``strategy.progress_deadline`` without them, naming the phase and what was missing; a
crash-looping canary instance is *failed* and rolls back at once, from any phase. The watch
ends as blue-green's does (``nonstop.analysis.watch.watch_end``): no request for the canary
while the service answered ``min_requests`` fails it, a window spanning an agent restart is
watched again.
A step's zero-request canary while traffic flows fails its data-plane check (the share it
measures is 0%); with too little traffic for that check, a step still never ends with no
request for the canary while the service answered too many for chance (:func:`_unserved`).

Any failure: ``SetWeights({stable: 100})`` first, so traffic is back on the warm stable release
before anything stops; then the canary scales to 0 (drains, then stops; invariant 2).

Worked example, replicas 4, steps 10% (pause 1m), 50% (analysis error_rate max 0.01)::

    t=0     scaling 1/2   ScaleRelease(v2, 1)               ceil(4 * 10 / 100) = 1 canary
    t=3     scaling 1/2   SetWeights({v1: 90, v2: 10})      v2 ready (1/1)
    t=4     step 1/2                                        the router serves it: the step begins
    t=9                                                     weight verified: 52 of 498 = 10.4%
    t=64    scaling 2/2   ScaleRelease(v2, 2)               pause over; ceil(4 * 50 / 100) = 2
    t=67    scaling 2/2   SetWeights({v1: 50, v2: 50})
    t=68    step 2/2
    t=78                                                    "analysis error_rate passed: ..."
    t=78    promoting     ScaleRelease(v2, 4)
    t=82    watching      SetWeights({v2: 100})
    t=382   completed     ScaleRelease(v1, 0), Finish       5 min watch held

Had the canary failed 5% of its requests while v1 failed none (at 200 requests/s: 20 canary
requests, one error a second), the sequential test would have rolled back at about t=6: two
canary errors and none on v1 at a 10% share give an e-value of 49, the third one 433, above
1/alpha = 100.

Progress lives in ``state.data`` as JSON (the analysis runs' ``to_dict``), so a restarted agent
decides from exactly where it was (STYLE.md #2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from nonstop.analysis.checks import AnalysisRun, QueryValue, conclude, merge, new_run, step
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.presets import preset_steps, preset_watch
from nonstop.analysis.sequential import SequentialRun, new_sequential, observe_windows
from nonstop.analysis.verdict import Verdict
from nonstop.analysis.verdict import window as span
from nonstop.analysis.watch import RESTART, watch_end, watch_verdict
from nonstop.analysis.weight import weight_verdict
from nonstop.config.schema import CanaryConfig, CanaryStep, CheckConfig, WatchConfig
from nonstop.errors import ConfigError
from nonstop.plan.model import (
    Action,
    Decision,
    Finish,
    Observed,
    Outcome,
    RolloutSpec,
    RolloutState,
    ScaleRelease,
    SetWeights,
    metrics_lack,
    restarts,
    stalled,
    watch_again,
)

SCALING, STEP, PROMOTING, WATCHING = "scaling", "step", "promoting", "watching"
TICK = 1.0
WEIGHT_MIN_SAMPLES = 50
"""Requests before the data-plane check may judge (its Wilson interval needs some)."""
UNVERIFIED_WARNING = 60.0
"""Seconds without a data-plane verdict before an event says the analysis is waiting for it."""
UNSERVED_P = 0.001
"""A step whose canary got none of the service's requests fails when that is this unlikely
at its weight (``(1 - weight) ** requests``); likelier, it may be chance at low traffic."""
SEQUENTIAL_IDLE = 60.0
"""Seconds the sequential test may go without usable counts (a canary and a stable request in
the same window) before an event says so; it is never a rollback."""
WINDOW = 300.0
"""Longest measurement window (seconds): the request stream keeps 15 minutes, and a window
whose start slid would overlap the previous one."""


def steps(spec: RolloutSpec) -> list[CanaryStep]:
    """The rollout's steps (``state.step`` indexes them; ``len(steps)`` once promoting)."""
    canary = _config(spec)
    return list(canary.steps) if canary.steps else preset_steps(str(canary.preset))


def queries(spec: RolloutSpec, state: RolloutState) -> list[str]:
    """Templates of the ``query`` checks that may judge now (the background analysis and the
    current step's): the engine asks the metrics provider for their values and hands them in
    through ``observed.queries``."""
    checks = list(_config(spec).analysis)
    plan = steps(spec)
    if 0 <= state.step < len(plan):
        checks += plan[state.step].analysis or ()
    return list(dict.fromkeys(c.query for c in checks if c.metric == "query" and c.query))


def standing(spec: RolloutSpec, state: RolloutState) -> str:
    """Where a running canary stands, in one line for ``status`` and the dashboard: what it
    waits for, then the last real verdict. A check that has not judged a window yet says why
    (the data-plane check still counting, or its first window still open), never "was never
    measured", which is the end-of-step summary of a check that got no data at all.

    "paused for a person (paused by operator); last verdict: error_rate passed: ...";
    "step 1/2 waits for `nonstop promote`; analysis waits for the data-plane check: weight: ..."
    """
    plan = steps(spec)
    if state.paused:
        wait = f"paused for a person ({state.data.get('paused_why') or 'paused'})"
    elif state.phase == STEP and 0 <= state.step < len(plan) and plan[state.step].pause == {}:
        wait = f"step {state.step + 1}/{len(plan)} waits for `nonstop promote`"
    else:
        wait = state.phase if state.step < 0 else f"{state.phase}, step {state.step + 1}"
    return f"{wait}; {last_verdict(spec, state)}"


def last_verdict(spec: RolloutSpec, state: RolloutState) -> str:
    """The latest window any check judged, or why none has been judged yet."""
    unverified = not_judged(spec, state)
    judged = [
        v
        for key in ("background", "analysis")
        if state.data.get(key)
        for c in _run(state, key).checks
        if (v := c.last) is not None
    ]
    if not judged:
        return unverified or "no check has judged a window yet"
    last = max(judged, key=lambda v: v.end or 0.0)
    said = f"last verdict: {last.check} {_past(last.outcome)}: {last.reason}"
    return f"{unverified}; {said}" if unverified else said


def not_judged(spec: RolloutSpec, state: RolloutState) -> str:
    """Why the checks cannot judge now, or "": they wait for the data-plane check to tell
    that the router sends the canary its weight (its verdict over the counts so far)."""
    if state.phase != STEP or state.data.get("weight_ok", True):
        return ""
    canary, total = state.data.get("weight_counts", (0, 0))
    verdict = weight_verdict(
        int(state.data["weight"]),
        int(canary),
        int(total),
        _config(spec).weight_tolerance,
        WEIGHT_MIN_SAMPLES,
    )
    return f"analysis waits for the data-plane check: {verdict.reason}"


def canary_instances(replicas: int, weight: int) -> int:
    """Canary instances for ``weight`` percent of traffic: enough for their share, at least one.

    >>> canary_instances(4, 10), canary_instances(4, 50), canary_instances(10, 25)
    (1, 2, 3)
    """
    return max(1, math.ceil(replicas * weight / 100))


def initial_state(spec: RolloutSpec, now: float) -> RolloutState:
    canary = _config(spec)
    background = new_run(canary.analysis)
    data = {
        "weight": 0,
        "canary": 0,
        "traffic": False,
        "weight_ok": False,
        "background": background.to_dict(),
        "analysis": new_run(()).to_dict(),
        "due": {},
        "sequential": new_sequential().to_dict() if canary.sequential else None,
    }
    return RolloutState(phase=SCALING, phase_started_at=now, step=-1, data=data)


def decide(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    if observed.command in ("abort", "rollback"):
        return _give_up(spec, state, observed, f"{observed.command} requested by operator")
    failed = observed.failed(spec.candidate)
    if failed:
        first = failed[0]
        return _give_up(spec, state, observed, f"{first.id} did not become ready: {first.failed}")
    if state.step < 0:
        return _next_step(spec, state, observed, ())
    if state.phase == SCALING:
        return _scaling(spec, state, observed)
    if state.phase == STEP:
        return _step(spec, state, observed)
    if state.phase == PROMOTING:
        return _promoting(spec, state, observed)
    if state.phase == WATCHING:
        return _watching(spec, state, observed)
    raise ValueError(f"canary has no phase {state.phase!r}")


# --- steps ------------------------------------------------------------------------------------


def _next_step(
    spec: RolloutSpec, state: RolloutState, observed: Observed, events: tuple[str, ...]
) -> Decision:
    """Begin step ``state.step + 1``: scale for its weight, or start it at once."""
    plan = steps(spec)
    index = state.step + 1
    if spec.stable is None or spec.rollback:
        why = "first deploy" if spec.stable is None else "rollback"
        return _promote(spec, state, observed, (*events, f"{why}: no canary steps"))
    if index >= len(plan):
        return _promote(spec, state, observed, events)
    if index == 0:
        weights = ", ".join(f"{s.weight}%" for s in plan if s.weight is not None) or "no weights"
        events = (
            *events,
            f"canary {spec.stable} -> {spec.candidate}: {len(plan)} steps ({weights})",
        )
    current = plan[index]
    state = replace(state, step=index)
    if current.weight is not None:
        want = canary_instances(spec.replicas, current.weight)
        data = {"canary": max(want, int(state.data["canary"]))}
        scaling = _with(_window(state, SCALING, observed.now), data)
        return _scaling(spec, scaling, observed, events)
    return _begin(spec, state, observed, events)


def _scaling(
    spec: RolloutSpec, state: RolloutState, observed: Observed, events: tuple[str, ...] = ()
) -> Decision:
    state, idle = _sequential(spec, state, observed)
    events = (*events, *idle)
    fail = _failure(state)
    if fail:
        return _give_up(spec, state, observed, fail, events)
    if observed.command == "promote_full":
        return _promote(spec, state, observed, (*events, "promote to 100% requested by operator"))
    state, command_events = _command(state, observed)
    events = (*events, *command_events, *_ignored(observed, SCALING))
    want = int(state.data["canary"])
    ready = observed.ready(spec.candidate)
    late = stalled(spec, SCALING, state.phase_started_at, observed, spec.candidate, want)
    if late:
        return _give_up(spec, state, observed, late, events)
    if ready < want:
        return Decision(state, _hold(spec, state.data), events, wake_in=TICK)
    # The step (and its measurement window) begins only once the router serves the new weight,
    # so no number judged at this weight was counted under the previous one.
    weight = steps(spec)[state.step].weight
    target = _split(spec, int(state.data["weight"]) if weight is None else weight)
    if observed.weights is None or dict(observed.weights) != target:
        actions = (*_hold(spec, state.data)[:2], SetWeights(target))
        events = (*events, f"{spec.candidate} ready ({ready}/{want}); setting weights {target}")
        return Decision(state, actions, events, wake_in=TICK)
    return _begin(spec, state, observed, events)


def _begin(
    spec: RolloutSpec, state: RolloutState, observed: Observed, events: tuple[str, ...]
) -> Decision:
    """Step ``state.step`` starts now: set its weight; its window and its analysis start here."""
    plan = steps(spec)
    current = plan[state.step]
    pending = {k: v for k, v in state.data.get("pending", {}).items() if k.startswith("back")}
    stable = state.data.get("pending_stable", {})
    data: dict[str, Any] = {
        "analysis": new_run(current.analysis or ()).to_dict(),
        "due": {},
        "pending": pending,
        "pending_stable": {k: v for k, v in stable.items() if k.startswith("back")},
        "overtime_since": None,
        "weight_since": observed.now,
        "weight_warned": False,
    }
    headline = f"step {state.step + 1}/{len(plan)}"
    if current.weight is not None:
        weight = current.weight
        changed = weight != int(state.data["weight"])
        data.update(weight=weight, traffic=bool(state.data["traffic"]) or weight > 0)
        if changed:
            data.update(weight_ok=False, weight_counts=[0, 0])
        instances = int(state.data["canary"])
        headline += f": weight {weight}% ({instances} instance{'s' if instances != 1 else ''})"
    if current.pause == {}:
        headline += ", waiting for `nonstop promote`"
    elif current.pause is not None:
        headline += f", pause {current.pause:g}s"
    if current.analysis:
        headline += f", analysis {', '.join(_name(c) for c in current.analysis)}"
    begun = _window(state, STEP, observed.now)
    begun = _with(begun, {**data, "step_started_at": begun.phase_started_at})
    return Decision(begun, _hold(spec, begun.data), (*events, headline), wake_in=TICK)


def _step(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    state, events = _command(state, observed)
    current = steps(spec)[state.step]
    if observed.command == "promote":
        # A person moved on: a pause (theirs, or one for an inconclusive check) ends too.
        state = replace(state, paused=False)
        return _next_step(spec, state, observed, (*events, "promote requested by operator"))
    if observed.command == "promote_full":
        return _promote(spec, state, observed, (*events, "promote to 100% requested by operator"))
    state, idle = _sequential(spec, state, observed)
    events += idle
    fail = _failure(state)
    if fail:
        return _give_up(spec, state, observed, fail, events)
    state, verdict = _verify_weight(spec, state, observed)
    if verdict is not None and verdict.outcome == "fail":
        return _give_up(spec, state, observed, verdict.reason, events, outcome="aborted")
    if verdict is not None and verdict.outcome == "pass":
        events = (*events, f"data plane {verdict.reason}")
    state, hold_events = _warn_if_unverified(spec, current, state, observed, verdict)
    events += hold_events
    if observed.now - state.phase_started_at >= _window_length(spec, current, state):
        state, analysis_events = _close_window(spec, state, observed)
        events += analysis_events
    fail = _failure(state)
    if fail:
        return _give_up(spec, state, observed, fail, events)
    state, hold_events = _hold_if_inconclusive(state)
    events += hold_events
    fail = _failed_at_end(current, state, observed)
    if fail:
        return _give_up(spec, state, observed, fail, events)
    state, hold_events = _hold_if_undecided(spec, current, state, observed)
    events += hold_events
    if state.paused or not _step_over(current, state, observed):
        return Decision(state, _hold(spec, state.data), events, wake_in=TICK)
    unserved = _unserved(spec, state, observed)
    if unserved:
        return _give_up(spec, state, observed, unserved, events)
    if current.analysis:
        events = (*events, f"step analysis passed: {conclude(_run(state, 'analysis')).reason}")
    return _next_step(spec, state, observed, events)


def _unserved(spec: RolloutSpec, state: RolloutState, observed: Observed) -> str:
    """At the end of a step whose weight was never verified (too little traffic to tell): why
    it must not pass (no request reached the canary while the service answered too many for
    chance), or "".

    Worked example: weight 50%, the step's pause over, 30 requests (< the 50 the data-plane
    check needs), all 30 to the stable release (0.5^30, about 1e-9, by chance): "step 2: no
    request reached canary v2 at weight 50% while the service answered 30". With one of them to
    v2, or at weight 10% (0.9^30 = 4%: could be chance), the step ends."""
    weight, instances = int(state.data["weight"]), int(state.data["canary"])
    if state.data["weight_ok"] or weight == 0 or instances == 0:
        return ""
    canary, stable = _measured(spec, observed)
    closed_canary, closed_total = state.data.get("weight_counts", (0, 0))
    reached = int(closed_canary) + canary.requests
    service = int(closed_total) + canary.requests + stable.requests
    # Not one of ``service`` requests at ``weight``: implausible below UNSERVED_P by chance.
    if reached or weight >= 100 or (1 - weight / 100) ** service >= UNSERVED_P:
        return ""
    return (
        f"step {state.step + 1}: no request reached canary {spec.candidate} at weight {weight}% "
        f"while the service answered {service}"
    )


def _step_over(current: CanaryStep, state: RolloutState, observed: Observed) -> bool:
    if current.pause == {}:
        return False
    elapsed = observed.now - float(state.data.get("step_started_at", state.phase_started_at))
    if isinstance(current.pause, float | int) and elapsed < current.pause:
        return False
    if current.analysis:
        return bool(state.data["weight_ok"]) and conclude(_run(state, "analysis")).outcome == "pass"
    return True


def _command(state: RolloutState, observed: Observed) -> tuple[RolloutState, tuple[str, ...]]:
    command = observed.command
    if command == "pause":
        if state.paused:
            return state, ("pause ignored: already paused",)
        return _with(state, {"paused_why": "paused by operator"}, paused=True), (
            "paused by operator",
        )
    if command == "resume":
        if not state.paused:
            return state, ("resume ignored: not paused (a {} pause waits for `nonstop promote`)",)
        again = {"weight_since": observed.now, "overtime_since": None}
        resumed = _with(state, again, paused=False)
        return _restart_inconclusive(resumed), ("resumed by operator",)
    return state, ()


def _ignored(observed: Observed, phase: str) -> tuple[str, ...]:
    command = observed.command
    if command is None or command in ("abort", "rollback"):
        return ()
    if phase == SCALING and command in ("pause", "resume"):
        return ()  # applied by _command
    why = {
        SCALING: "the canary is not ready yet",
        PROMOTING: "already promoting",
        WATCHING: "the watch only judges; abort rolls back",
    }[phase]
    return (f"{command} ignored: {why}",)


# --- judging ----------------------------------------------------------------------------------


def _verify_weight(
    spec: RolloutSpec, state: RolloutState, observed: Observed
) -> tuple[RolloutState, Verdict | None]:
    """The data-plane check: once per weight, before any threshold check trusts it."""
    if state.data["weight_ok"]:
        return state, None
    if int(state.data["canary"]) == 0:
        # No canary instance, nothing routed to check; a check on this step will find no
        # requests and, in time, pause for a person with that reason.
        return _with(state, {"weight_ok": True}), None
    canary, stable = _measured(spec, observed)
    if not (canary.complete and stable.complete):
        # The source has not seen the whole window (Prometheus has no series for the canary
        # yet, or the agent restarted): "0 canary requests" would read as a broken split.
        return state, None
    closed_canary, closed_total = state.data.get("weight_counts", (0, 0))
    verdict = weight_verdict(
        int(state.data["weight"]),
        closed_canary + canary.requests,
        closed_total + canary.requests + stable.requests,
        _config(spec).weight_tolerance,
        WEIGHT_MIN_SAMPLES,
    )
    if verdict.outcome == "pass":
        state = _with(state, {"weight_ok": True})
    return state, verdict


def _window_length(spec: RolloutSpec, current: CanaryStep, state: RolloutState) -> float:
    """How long a measurement window of this step lasts: the shortest check interval (so each
    check judges windows of about its own interval), at most :data:`WINDOW`."""
    checks = list(current.analysis or ())
    if int(state.data["weight"]) > 0:
        checks += _config(spec).analysis
    return min([WINDOW, *(max(1.0, c.interval) for c in checks)])


def _close_window(
    spec: RolloutSpec, state: RolloutState, observed: Observed
) -> tuple[RolloutState, tuple[str, ...]]:
    """The window ends: its counts join the data-plane check's or the checks' pending data,
    due checks judge, and a new window begins (the engine measures since it)."""
    canary, stable = _measured(spec, observed)
    events: tuple[str, ...] = ()
    if state.data["weight_ok"]:
        state, events = _analyse(spec, state, observed, canary, stable)
    elif not (canary.complete and stable.complete):
        pass  # a window the source did not see whole says nothing about the split
    else:
        closed_canary, closed_total = state.data.get("weight_counts", (0, 0))
        total = closed_total + canary.requests + stable.requests
        state = _with(state, {"weight_counts": [closed_canary + canary.requests, total]})
    return _window(state, STEP, observed.now), events


def _analyse(
    spec: RolloutSpec,
    state: RolloutState,
    observed: Observed,
    canary: Measurement,
    stable: Measurement,
) -> tuple[RolloutState, tuple[str, ...]]:
    """Add the closed window to each check's data; checks that are due judge what they have.
    The stable release's window goes with it (``baseline``): an undecided check is compared
    with it at the end of the step (:func:`nonstop.analysis.checks.conclude`).

    Each window is judged once: ``failure_limit`` counts failing windows, never the same
    requests twice (a cumulative window would fail again on the same early error)."""
    due: dict[str, float] = dict(state.data["due"])
    pending: dict[str, Any] = dict(state.data.get("pending", {}))
    pending_stable: dict[str, Any] = dict(state.data.get("pending_stable", {}))
    started = float(state.data.get("step_started_at", state.phase_started_at))
    events: list[str] = []
    runs = {"background": _run(state, "background"), "analysis": _run(state, "analysis")}
    for key, run in runs.items():
        if key == "background" and int(state.data["weight"]) == 0:
            continue  # no traffic to judge
        for index, check_run in enumerate(run.checks):
            slot = f"{key}[{index}]"
            if check_run.check.metric == "query":
                # The provider computes the value over the window itself: nothing to pool.
                if observed.now < due.get(slot, started + check_run.check.interval):
                    continue
                value = _query_value(spec, state, observed, check_run.check)
                run, verdict = step(run, check_run.check, value)
                due[slot] = observed.now + check_run.check.interval
                events.append(
                    f"analysis {verdict.check} {_past(verdict.outcome)}: {verdict.reason}"
                )
                continue
            before = pending.pop(slot, None)
            window = merge(Measurement.from_dict(before) if before else None, canary)
            before = pending_stable.pop(slot, None)
            baseline = merge(Measurement.from_dict(before) if before else None, stable)
            if observed.now < due.get(slot, started + check_run.check.interval):
                pending[slot] = window.to_dict()
                pending_stable[slot] = baseline.to_dict()
                continue
            run, verdict = step(run, check_run.check, window, baseline=baseline)
            due[slot] = observed.now + check_run.check.interval
            events.append(f"analysis {verdict.check} {_past(verdict.outcome)}: {verdict.reason}")
        runs[key] = run
    data = {key: run.to_dict() for key, run in runs.items()}
    changes = {**data, "due": due, "pending": pending, "pending_stable": pending_stable}
    return _with(state, changes), tuple(events)


def _query_value(
    spec: RolloutSpec, state: RolloutState, observed: Observed, check: CheckConfig
) -> QueryValue:
    """The window's value of a query check, or an inconclusive one saying none came."""
    value = observed.queries.get(str(check.query))
    if value is not None:
        return value
    why = "the metrics provider gave no value for this query"
    return QueryValue(spec.candidate, state.phase_started_at, observed.now, None, why)


def _sequential(
    spec: RolloutSpec, state: RolloutState, observed: Observed
) -> tuple[RolloutState, tuple[str, ...]]:
    """Feed the always-valid canary-vs-stable error test (:func:`_failure` reads its verdict).

    The test only learns from a window holding both canary and stable requests, with consistent
    counts. When it cannot (no stable traffic, a window it must skip), its last verdict says why
    (``nonstop explain`` shows it), and after :data:`SEQUENTIAL_IDLE` seconds without usable
    counts an event says so, once until it runs again: the canary is then guarded by its
    threshold checks alone, which is worth knowing but no reason to roll back."""
    if state.data.get("sequential") is None or not state.data["traffic"]:
        return state, ()
    canary, stable = _measured(spec, observed)
    run = SequentialRun.from_dict(state.data["sequential"])
    run, verdict = observe_windows(run, canary, stable)
    since = float(state.data.get("sequential_since") or observed.now)
    why = ""
    if verdict.outcome == "inconclusive":
        why = verdict.reason
    elif canary.requests and not stable.requests:
        why = (
            f"sequential: no stable requests beside {canary.requests} canary requests "
            f"({span(canary.start, canary.end)}); nothing to compare the canary with"
        )
    changes: dict[str, Any] = {"sequential_since": since}
    events: tuple[str, ...] = ()
    if not why and canary.requests and stable.requests:  # it learned from this window
        changes.update(sequential_since=observed.now, sequential_warned=False)
    elif why:  # (no canary request yet, as a window begins, is neither)
        if not run.rejected:
            run = replace(run, last=replace(verdict, outcome="inconclusive", reason=why))
        idle = observed.now - since
        if idle >= SEQUENTIAL_IDLE and not state.data.get("sequential_warned"):
            changes["sequential_warned"] = True
            events = (
                f"sequential test could not run for {idle:.0f}s: {why}; "
                "the threshold checks still judge",
            )
    return _with(state, {**changes, "sequential": run.to_dict()}), events


def _failure(state: RolloutState) -> str:
    """The reason of the first failed analysis (sequential test, background, step), or ""."""
    sequential = state.data.get("sequential")
    if sequential is not None:
        run = SequentialRun.from_dict(sequential)
        if run.rejected and run.last is not None:
            return f"sequential test failed: {run.last.reason}"
    for key in ("background", "analysis"):
        run_ = _run(state, key)
        if run_.phase == "failed":
            return f"analysis failed: {conclude(run_).reason}"
    return ""


def _warn_if_unverified(
    spec: RolloutSpec,
    current: CanaryStep,
    state: RolloutState,
    observed: Observed,
    verdict: Verdict | None,
) -> tuple[RolloutState, tuple[str, ...]]:
    """Checks wait for the data-plane check. If it cannot tell for a while (a share near the
    edge of the tolerance needs many requests), say so once; the step waits, as its checks
    must, and ``nonstop promote`` moves on. No pause: the wait ends by itself once it can tell."""
    checks = [*(current.analysis or ()), *_config(spec).analysis]
    if state.data.get("weight_warned") or verdict is None or verdict.outcome != "inconclusive":
        return state, ()
    if not checks:
        return state, ()
    shortest = min(c.interval for c in checks)
    limit = max(UNVERIFIED_WARNING, _run(state, "analysis").inconclusive_limit * shortest)
    waited = observed.now - float(state.data.get("weight_since", state.phase_started_at))
    if waited < limit:
        return state, ()
    return _with(state, {"weight_warned": True}), (
        f"data plane unverified after {waited:.0f}s: {verdict.reason}; analysis waits for it "
        "(`nonstop promote` skips the step)",
    )


def _hold_if_inconclusive(state: RolloutState) -> tuple[RolloutState, tuple[str, ...]]:
    """A check that could not judge for too long pauses the rollout for a person."""
    if state.paused:
        return state, ()
    for key in ("background", "analysis"):
        run = _run(state, key)
        if run.phase == "inconclusive":
            why = f"analysis inconclusive: {conclude(run).reason}"
            return _with(state, {"paused_why": why}, paused=True), (
                f"{why}; paused: `nonstop promote` skips the step, "
                "`nonstop resume` keeps measuring",
            )
    return state, ()


def _failed_at_end(current: CanaryStep, state: RolloutState, observed: Observed) -> str:
    """Once the step's pause is over, its analysis over the whole step may fail where no
    window did: a check the step could not place below its limit whose canary is worse than
    the stable release over the same windows, or shown above its limit while stable is not
    (``conclude``). The reason, or ""."""
    if not current.analysis or not state.data["weight_ok"] or current.pause == {}:
        return ""
    pause = float(current.pause) if isinstance(current.pause, float | int) else 0.0
    started = float(state.data.get("step_started_at", state.phase_started_at))
    if observed.now - started < pause:
        return ""
    verdict = conclude(_run(state, "analysis"))
    if verdict.outcome != "fail":
        return ""
    return f"analysis failed at the end of step {state.step + 1}: {verdict.reason}"


def _hold_if_undecided(
    spec: RolloutSpec, current: CanaryStep, state: RolloutState, observed: Observed
) -> tuple[RolloutState, tuple[str, ...]]:
    """The step's pause is over but its analysis cannot say ``pass`` (an error rate that the
    step's whole data cannot tell from its limit): keep measuring, as long again as the pause
    (at least ``inconclusive_limit`` windows), then pause for a person with the reason rather
    than pass or fail on a guess. ``nonstop promote`` moves on, ``resume`` measures on. A step
    without a pause counts as a pause of 0; one waiting for ``nonstop promote`` waits anyway."""
    if state.paused or not current.analysis or not state.data["weight_ok"]:
        return state, ()
    if current.pause == {}:
        return state, ()  # waits for `nonstop promote` anyway
    pause = float(current.pause) if isinstance(current.pause, float | int) else 0.0
    started = float(state.data.get("step_started_at", state.phase_started_at))
    if observed.now - started < pause:
        return state, ()
    run = _run(state, "analysis")
    verdict = conclude(run)
    if verdict.outcome != "inconclusive":
        return state, ()
    since = state.data.get("overtime_since")
    if since is None:
        return _with(state, {"overtime_since": observed.now}), ()
    grace = max(pause, run.inconclusive_limit * _window_length(spec, current, state))
    waited = observed.now - float(since)
    if waited < grace:
        return state, ()
    why = f"analysis still inconclusive {waited:.0f}s after the step's pause: {verdict.reason}"
    return _with(state, {"paused_why": why}, paused=True), (
        f"{why}; paused: `nonstop promote` moves on, `nonstop resume` keeps measuring",
    )


def _restart_inconclusive(state: RolloutState) -> RolloutState:
    """After a person resumed: checks that gave up for lack of data start counting afresh."""
    data: dict[str, Any] = {}
    for key in ("background", "analysis"):
        run = _run(state, key)
        if run.phase == "inconclusive":
            checks = tuple(
                replace(c, phase="running", inconclusive_streak=0)
                if c.phase == "inconclusive"
                else c
                for c in run.checks
            )
            data[key] = replace(run, checks=checks).to_dict()
    return _with(state, data)


# --- promotion, watch and giving up --------------------------------------------------------------


def _promote(
    spec: RolloutSpec, state: RolloutState, observed: Observed, events: tuple[str, ...]
) -> Decision:
    plan = steps(spec)
    promoting = _with(
        _window(state, PROMOTING, observed.now, step=len(plan), paused=False),
        {"canary": spec.replicas},
    )
    events = (*events, f"promoting {spec.candidate}: scaling to {spec.replicas}")
    return _promoting(spec, promoting, observed, events)


def _promoting(
    spec: RolloutSpec, state: RolloutState, observed: Observed, events: tuple[str, ...] = ()
) -> Decision:
    state, idle = _sequential(spec, state, observed)
    events = (*events, *idle)
    fail = _failure(state)
    if fail:
        return _give_up(spec, state, observed, fail, events)
    events = (*events, *_ignored(observed, PROMOTING))
    ready = observed.ready(spec.candidate)
    late = stalled(spec, PROMOTING, state.phase_started_at, observed, spec.candidate, spec.replicas)
    if late:
        return _give_up(spec, state, observed, late, events)
    if ready < spec.replicas:
        return Decision(state, _hold(spec, state.data), events, wake_in=TICK)
    switch = SetWeights({spec.candidate: 100})
    events = (*events, f"{spec.candidate} ready ({ready}/{spec.replicas}); all traffic to it")
    watch = _watch(spec)
    if spec.stable is None or spec.rollback or watch.duration <= 0:
        return _complete(spec, state, observed, (switch,), events)
    watching = _with(_window(state, WATCHING, observed.now), {"weight": 100})
    events = (*events, f"watching {spec.candidate} for {watch.duration:g}s")
    return Decision(watching, (switch,), events, wake_in=TICK)


def _watching(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    events = _ignored(observed, WATCHING)
    measured, _ = _measured(spec, observed)
    watch = _watch(spec)
    verdict = watch_verdict(watch, measured)
    if verdict.outcome == "fail":
        return _give_up(spec, state, observed, verdict.reason, events)
    if observed.now - state.phase_started_at < watch.duration:
        return Decision(state, events=events, wake_in=TICK)
    verdict = watch_end(watch, measured, observed.traffic, restarts(state), metrics_lack(spec))
    if verdict.outcome == "fail":
        return _give_up(spec, state, observed, verdict.reason, events)
    if verdict.check == RESTART:
        again = f"{verdict.reason}; watching {spec.candidate} again for {watch.duration:g}s"
        return Decision(
            _window(watch_again(state), WATCHING, observed.now), events=(*events, again)
        )
    events = (*events, f"watch held: {measured.errors}/{measured.requests} errors")
    return _complete(spec, state, observed, (), events)


def _complete(
    spec: RolloutSpec,
    state: RolloutState,
    observed: Observed,
    actions: tuple[Action, ...],
    events: tuple[str, ...],
) -> Decision:
    retire = (ScaleRelease(spec.stable, 0),) if spec.stable is not None else ()
    done = Finish("completed", f"{spec.candidate} serves all traffic")
    return Decision(state.enter("completed", observed.now), (*actions, *retire, done), events)


def _give_up(
    spec: RolloutSpec,
    state: RolloutState,
    observed: Observed,
    reason: str,
    events: tuple[str, ...] = (),
    *,
    outcome: Outcome | None = None,
) -> Decision:
    """Traffic back to the stable release first, then drain and stop the canary."""
    actions: list[Action] = []
    if spec.stable is not None:
        actions.append(SetWeights({spec.stable: 100}))
    actions.append(ScaleRelease(spec.candidate, 0))
    if outcome is None:
        outcome = "rolled_back" if state.data.get("traffic") else "aborted"
    actions.append(Finish(outcome, reason))
    verb = f"traffic back to {spec.stable}; " if spec.stable is not None else ""
    event = f"{reason}; {verb}{outcome.replace('_', ' ')}"
    return Decision(state.enter(outcome, observed.now), tuple(actions), (*events, event))


# --- helpers ----------------------------------------------------------------------------------


def _hold(spec: RolloutSpec, data: Mapping[str, Any]) -> tuple[Action, ...]:
    """The current targets, restated every call so a restarted engine converges on them."""
    canary = ScaleRelease(spec.candidate, int(data["canary"]))
    if spec.stable is None:
        return (canary,)  # a first deploy: no traffic until it is all ready
    weights = SetWeights(_split(spec, int(data["weight"])))
    return (ScaleRelease(spec.stable, spec.replicas), canary, weights)


def _split(spec: RolloutSpec, weight: int) -> dict[str, int]:
    """``{stable: 100 - weight, canary: weight}`` without zero entries."""
    assert spec.stable is not None
    weights = {spec.stable: 100 - weight, spec.candidate: weight}
    return {release: w for release, w in weights.items() if w > 0}


def _measured(spec: RolloutSpec, observed: Observed) -> tuple[Measurement, Measurement]:
    """The canary's and the stable's Measurement of this phase (empty ones when none came)."""
    start = min((m.start for m in observed.measurements.values()), default=observed.now)

    def get(release: str | None) -> Measurement:
        if release is None:
            return Measurement("-", start, observed.now)
        return observed.measurements.get(release) or Measurement(release, start, observed.now)

    return get(spec.candidate), get(spec.stable)


def _window(state: RolloutState, phase: str, now: float, **changes: Any) -> RolloutState:
    """Enter ``phase`` with a fresh measurement window (the engine measures since
    ``phase_started_at``). It starts on the next whole second: the request stream counts whole
    seconds, so a window starting mid-second would reach back into the previous window (and
    the previous weight), and the sequential test would rightly refuse the overlap."""
    return state.enter(phase, float(math.ceil(now)), **changes)


def _run(state: RolloutState, key: str) -> AnalysisRun:
    return AnalysisRun.from_dict(state.data[key])


def _config(spec: RolloutSpec) -> CanaryConfig:
    canary = spec.config.strategy.canary
    if canary is None:
        issue = 'a canary rollout needs a [strategy.canary] table with "steps" or a "preset"'
        raise ConfigError([("strategy.canary", issue)])
    return canary


def _watch(spec: RolloutSpec) -> WatchConfig:
    """``[watch]`` as written; a preset's own watch when the file has no ``[watch]``."""
    canary = _config(spec)
    if (
        canary.preset is not None
        and not canary.steps
        and "watch" not in spec.config.model_fields_set
    ):
        return preset_watch(canary.preset)
    return spec.config.watch


def _name(check: CheckConfig) -> str:
    return f"latency p{check.percentile:g}" if check.metric == "latency" else check.metric


def _past(outcome: str) -> str:
    return {"pass": "passed", "fail": "failed"}.get(outcome, outcome)


def _with(state: RolloutState, changes: Mapping[str, Any], **fields: Any) -> RolloutState:
    return replace(state, data={**state.data, **changes}, **fields)
