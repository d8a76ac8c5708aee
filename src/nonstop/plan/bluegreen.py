"""Blue-green: start the new release beside the old, check it, switch all traffic at once.

Phases (each decide() returns early while its condition is not met, STYLE.md #2)::

    starting ──ready──> smoke ──passed──> awaiting_promote ──promote──> watching ──> completed
       │                  │                    │                           │
       └─failed─> aborted └──failed─> aborted  └──abort─> aborted          └─errors─> rolled_back

Worked example, replicas 2, v1 serving, ``nonstop deploy v2``::

    t=0    starting          ScaleRelease(v2, 2)               v1 has 100%, v2 gets nothing yet
    t=3.1  starting -> smoke RunSmoke(v2)                      both v2 instances ready (2/2)
    t=4.0  smoke -> watching SetWeights({v2: 100})             smoke passed, auto_promote
    t=304  watching -> done  Finish(completed)                 5 min at 0.3% errors < 2%

The previous side is *not* stopped here: the engine keeps it warm for ``keep_previous`` after
the rollout completes, so ``nonstop rollback`` is one weight change (invariant 5). If during the
watch v2 fails 2.4% of 500 requests (> 2%), the decision is ``SetWeights({v1: 100})`` first,
then ``ScaleRelease(v2, 0)`` (drain, then stop) and ``Finish(rolled_back)``: traffic moves back
before anything is stopped.

A rollback rollout (``spec.rollback``) runs the same machine with the previous release as the
candidate and no smoke test: when the previous side is warm it switches at once. A rollback,
like a first deploy, has no watch but a short check after its switch: for
``watch.check_duration`` (10 s, at most ``watch.duration``) no instance of the release may
restart or fail, and its requests must stay within the error budget. A rollback onto a
release that crashes switches back and ends ``rolled_back``; a first deploy that crashes
stops and ends ``aborted`` (weights back to None: nothing serves). Neither reports success.

Every phase that waits has an end. ``starting`` gives up after ``strategy.progress_deadline``
(10 min) with what was missing ("starting: no progress for 601s (progress_deadline 600s): v2
has 3/4 ready; v2-4 not ready"); an instance that dies after readiness again and again
(``health.crash_loop_restarts`` within ``crash_loop_window``) is *failed*, so the rollout ends
long before that. During the watch, a failed (crash-looping) instance of the candidate rolls
back at once, whatever the error rate says.

The watch judges every response sent while the candidate was meant to serve, the router's own
502/503 included (``nonstop.analysis.watch``). When its time is up it completes only if the
candidate was within budget - or had too few requests to judge while the whole service had
fewer than ``min_requests`` too. No request for the candidate while the service answered
``min_requests`` is a failure; a window that began before the request records the agent holds
(it restarted mid-watch) is watched again.
"""

from __future__ import annotations

from nonstop.analysis.measurement import Measurement
from nonstop.analysis.watch import RESTART, watch_end, watch_summary, watch_verdict
from nonstop.plan.model import (
    Action,
    Decision,
    Finish,
    Observed,
    Outcome,
    RolloutSpec,
    RolloutState,
    RunSmoke,
    ScaleRelease,
    SetWeights,
    metrics_lack,
    restarts,
    stalled,
    watch_again,
)

STARTING, SMOKE, AWAITING, WATCHING = "starting", "smoke", "awaiting_promote", "watching"


def initial_state(spec: RolloutSpec, now: float) -> RolloutState:
    return RolloutState(phase=STARTING, phase_started_at=now)


def decide(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    if observed.command in ("abort", "rollback"):
        return _give_up(spec, state, f"{observed.command} requested by operator")
    if state.phase == STARTING:
        return _starting(spec, state, observed)
    if state.phase == SMOKE:
        return _smoke(spec, state, observed)
    if state.phase == AWAITING:
        return _awaiting(spec, state, observed)
    if state.phase == WATCHING:
        return _watching(spec, state, observed)
    raise ValueError(f"blue-green has no phase {state.phase!r}")


def _starting(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    want = ScaleRelease(spec.candidate, spec.replicas)
    failed = observed.failed(spec.candidate)
    if failed:
        first = failed[0]
        return _give_up(spec, state, f"{first.id} did not become ready: {first.failed}")
    ready = observed.ready(spec.candidate)
    if ready < spec.replicas:
        late = stalled(
            spec, STARTING, state.phase_started_at, observed, spec.candidate, spec.replicas
        )
        if late:
            return _give_up(spec, state, late)
        return Decision(state, (want,), wake_in=0.5)
    event = f"{spec.candidate} ready ({ready}/{spec.replicas})"
    bluegreen = spec.config.strategy.bluegreen
    if bluegreen.smoke and not spec.rollback:
        return Decision(
            state.enter(SMOKE, observed.now),
            (want, RunSmoke(spec.candidate)),
            (event, f"running smoke test against {spec.candidate}"),
        )
    return _after_smoke(spec, state, observed, (event,))


def _smoke(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    if observed.smoke is None:
        return Decision(state, (RunSmoke(spec.candidate),), wake_in=0.5)
    if observed.smoke != "passed":
        return _give_up(spec, state, f"smoke test {observed.smoke}")
    return _after_smoke(spec, state, observed, ("smoke test passed",))


def _after_smoke(
    spec: RolloutSpec, state: RolloutState, observed: Observed, events: tuple[str, ...]
) -> Decision:
    # Nothing serves yet on a first deploy: there is no one to protect by waiting.
    if spec.rollback or spec.stable is None or spec.config.strategy.bluegreen.auto_promote:
        return _switch(spec, state, observed, events)
    return Decision(
        state.enter(AWAITING, observed.now),
        events=(*events, f"{spec.candidate} is ready; waiting for `nonstop promote`"),
    )


def _awaiting(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    if observed.command in ("promote", "promote_full"):
        return _switch(spec, state, observed, ("promote requested by operator",))
    return Decision(state, wake_in=1.0)


def _switch(
    spec: RolloutSpec, state: RolloutState, observed: Observed, events: tuple[str, ...]
) -> Decision:
    switch = SetWeights({spec.candidate: 100})
    events = (*events, f"switched all traffic to {spec.candidate}")
    duration = _watch_duration(spec)
    if duration <= 0:
        done = Finish("completed", f"{spec.candidate} serves all traffic")
        return Decision(state.enter("completed", observed.now), (switch, done), events)
    what = "checking" if _short_check(spec) else "watching"
    return Decision(
        state.enter(WATCHING, observed.now),
        (switch,),
        (*events, f"{what} {spec.candidate} for {duration:g}s"),
        wake_in=1.0,
    )


def _short_check(spec: RolloutSpec) -> bool:
    """A first deploy or a rollback: no watch, a short check that the release stays up."""
    return spec.rollback or spec.stable is None


def _watch_duration(spec: RolloutSpec) -> float:
    watch = spec.config.watch
    if _short_check(spec):
        return float(min(watch.check_duration, watch.duration))
    return float(watch.duration)


def _watching(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    watch = spec.config.watch
    failed = observed.failed(spec.candidate)
    if failed:
        return _give_up(spec, state, f"watch: {failed[0].id} {failed[0].failed}")
    restarted = [
        i for i in observed.serving(spec.candidate) if i.started_at > state.phase_started_at
    ]
    if _short_check(spec) and restarted:
        # Instances that were ready at the switch must stay up through the check.
        return _give_up(spec, state, f"check: {restarted[0].id} restarted since the switch")
    measured = observed.measurements.get(spec.candidate) or Measurement(
        spec.candidate, state.phase_started_at, observed.now
    )
    verdict = watch_verdict(watch, measured)
    if verdict.outcome == "fail":
        return _give_up(spec, state, verdict.reason)
    duration = _watch_duration(spec)
    if observed.now - state.phase_started_at < duration:
        return Decision(state, wake_in=1.0)
    verdict = watch_end(watch, measured, observed.traffic, restarts(state), metrics_lack(spec))
    if verdict.outcome == "fail":
        return _give_up(spec, state, verdict.reason)
    if verdict.check == RESTART:
        again = f"{verdict.reason}; watching {spec.candidate} again for {duration:g}s"
        watching = watch_again(state).enter(WATCHING, observed.now)
        return Decision(watching, events=(again,), wake_in=1.0)
    label = "check" if _short_check(spec) else "watch"
    summary = watch_summary(measured).replace("the watch", f"the {label}")
    done = Finish("completed", f"{spec.candidate} serves all traffic ({summary})")
    return Decision(state.enter("completed", observed.now), (done,), (done.reason,))


def _give_up(spec: RolloutSpec, state: RolloutState, reason: str) -> Decision:
    """Undo in the safe order: traffic back first, then stop what this rollout started."""
    actions: list[Action] = []
    switched = state.phase == WATCHING
    if switched:
        # Back to the release that served; after a first deploy, to nobody (weights None).
        actions.append(SetWeights({spec.stable: 100} if spec.stable is not None else None))
    if not spec.rollback:
        actions.append(ScaleRelease(spec.candidate, 0))
    outcome: Outcome = "rolled_back" if switched and spec.stable is not None else "aborted"
    actions.append(Finish(outcome, reason))
    next_state = state.enter(outcome, state.phase_started_at)
    verb = f"switched traffic back to {spec.stable}; " if switched and spec.stable else ""
    return Decision(next_state, tuple(actions), (f"{reason}; {verb}{outcome.replace('_', ' ')}",))
