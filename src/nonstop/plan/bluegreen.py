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
candidate, no smoke test and no watch: when the previous side is warm it switches at once.
"""

from __future__ import annotations

from nonstop.analysis.measurement import Measurement
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
    if spec.rollback or spec.stable is None or spec.config.watch.duration <= 0:
        done = Finish("completed", f"{spec.candidate} serves all traffic")
        return Decision(state.enter("completed", observed.now), (switch, done), events)
    watch = spec.config.watch
    return Decision(
        state.enter(WATCHING, observed.now),
        (switch,),
        (*events, f"watching {spec.candidate} for {watch.duration:g}s"),
        wake_in=1.0,
    )


def _watching(spec: RolloutSpec, state: RolloutState, observed: Observed) -> Decision:
    assert spec.stable is not None
    watch = spec.config.watch
    measured = observed.measurements.get(spec.candidate)
    failure = watch_failure(measured, watch.max_error_rate, watch.min_requests)
    if failure:
        return _give_up(spec, state, failure)
    if observed.now - state.phase_started_at < watch.duration:
        return Decision(state, wake_in=1.0)
    summary = "no requests" if measured is None else f"{measured.errors}/{measured.requests} errors"
    done = Finish("completed", f"{spec.candidate} serves all traffic ({summary} during the watch)")
    return Decision(state.enter("completed", observed.now), (done,), (done.reason,))


def watch_failure(measured: Measurement | None, max_error_rate: float, min_requests: int) -> str:
    """Why the watched release fails its error budget, or "" while it holds (or data is short)."""
    if measured is None or measured.requests < min_requests or measured.error_rate is None:
        return ""
    if measured.error_rate > max_error_rate:
        return (
            f"error rate {measured.error_rate:.2%} > {max_error_rate:.2%} over "
            f"{measured.requests} requests to {measured.release}"
        )
    return ""


def _give_up(spec: RolloutSpec, state: RolloutState, reason: str) -> Decision:
    """Undo in the safe order: traffic back first, then stop what this rollout started."""
    actions: list[Action] = []
    switched = state.phase == WATCHING
    if spec.stable is not None and switched:
        actions.append(SetWeights({spec.stable: 100}))
    if not spec.rollback:
        actions.append(ScaleRelease(spec.candidate, 0))
    outcome: Outcome = "rolled_back" if switched else "aborted"
    actions.append(Finish(outcome, reason))
    next_state = state.enter(outcome, state.phase_started_at)
    verb = f"switched traffic back to {spec.stable}; " if switched else ""
    return Decision(next_state, tuple(actions), (f"{reason}; {verb}{outcome.replace('_', ' ')}",))
