"""Canary planner: a table of (steps, state, observation) -> actions and next phase, then a
simulation with a fake world that routes seeded traffic by the weights the planner sets."""

from __future__ import annotations

import doctest
import json
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from nonstop.analysis.checks import AnalysisRun, new_run
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.simulate import binomial
from nonstop.config.load import validate_config
from nonstop.config.schema import NonstopConfig
from nonstop.errors import ConfigError
from nonstop.plan import canary
from nonstop.plan.model import (
    Action,
    Command,
    Finish,
    InstanceView,
    Observed,
    RolloutSpec,
    RolloutState,
    ScaleRelease,
    SetWeights,
)

T0 = 1_000.0
ERROR_RATE = {"metric": "error_rate", "max": 0.01, "min_samples": 50, "interval": 10}
STEPS = [{"weight": 10, "pause": 60}, {"weight": 50, "analysis": [ERROR_RATE]}]


def config(
    steps: list[dict[str, Any]] | None = None,
    *,
    replicas: int = 4,
    watch: float | None = 60,
    **canary_cfg: Any,
) -> NonstopConfig:
    canary_cfg.setdefault("steps", STEPS if steps is None else steps)
    data: dict[str, Any] = {
        "app": {"name": "shop", "command": "app --port {port}", "replicas": replicas},
        "strategy": {"kind": "canary", "canary": canary_cfg},
    }
    if watch is not None:
        data["watch"] = {"duration": watch, "max_error_rate": 0.02, "min_requests": 50}
    return validate_config(data)


def up(
    release: str, n: int, *, failed: str | None = None, ready: bool = True
) -> tuple[InstanceView, ...]:
    ok = ready and failed is None
    return tuple(
        InstanceView(
            f"{release}-{i}", release, ready=ok, ready_since=T0 if ok else None, failed=failed
        )
        for i in range(1, n + 1)
    )


def traffic(
    canary_counts: tuple[int, int], stable_counts: tuple[int, int], *, end: float, start: float = T0
) -> dict[str, Measurement]:
    """Measurements of v2 (canary) and v1 (stable) over ``[start, end)``: (requests, errors)."""
    out = {}
    for release, (requests, errors) in (("v2", canary_counts), ("v1", stable_counts)):
        status = {"2xx": requests - errors, "5xx": errors}
        latency = {99.0: 40.0} if requests else {}
        out[release] = Measurement(release, start, end, requests, status, 0, latency)
    return out


def state_at(
    spec: RolloutSpec, phase: str, step: int, *, paused: bool = False, **data: Any
) -> RolloutState:
    """The state the planner keeps in ``phase`` of ``step`` (0-based), begun at T0."""
    base = dict(canary.initial_state(spec, T0).data)
    plan = canary.steps(spec)
    if 0 <= step < len(plan):
        base["analysis"] = new_run(plan[step].analysis or ()).to_dict()
    base.update(data)
    return RolloutState(phase, T0, step, paused, base)


# In step 1 (10%, 1 canary instance) with traffic already flowing and the weight verified.
AT_10 = {"weight": 10, "canary": 1, "traffic": True, "weight_ok": True}
AT_50 = {"weight": 50, "canary": 2, "traffic": True, "weight_ok": True}
HOLD_10 = [ScaleRelease("v1", 4), ScaleRelease("v2", 1), SetWeights({"v1": 90, "v2": 10})]
HOLD_50 = [ScaleRelease("v1", 4), ScaleRelease("v2", 2), SetWeights({"v1": 50, "v2": 50})]
BACK = [SetWeights({"v1": 100}), ScaleRelease("v2", 0)]


def persisted(state: RolloutState) -> RolloutState:
    """``state`` after a trip through JSON, as the engine stores it."""
    return RolloutState.from_dict(json.loads(json.dumps(state.to_dict())))


@dataclass
class Case:
    name: str
    phase: str
    step: int
    observed: Observed
    actions: list[Action]
    next_phase: str
    data: dict[str, Any] = field(default_factory=dict)
    config: NonstopConfig = field(default_factory=config)
    paused: bool = False
    next_paused: bool | None = None
    event: str = ""
    """A fragment one of the decision's events must contain."""
    reason: str = ""
    """A fragment the Finish reason must contain."""


CASES = [
    Case(
        "start: one canary instance for 10% of 4 replicas, no traffic yet",
        "scaling",
        -1,
        Observed(T0, up("v1", 4)),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 1), SetWeights({"v1": 100})],
        "scaling",
        event="canary v1 -> v2: 2 steps (10%, 50%)",
    ),
    Case(
        "canary ready: set 10%",
        "scaling",
        0,
        Observed(T0 + 3, up("v1", 4) + up("v2", 1), weights={"v1": 100}),
        HOLD_10,
        "scaling",
        data={"canary": 1},
        event="v2 ready (1/1); setting weights {'v1': 90, 'v2': 10}",
    ),
    Case(
        "the router serves 10%: the step (and its measurement window) begins",
        "scaling",
        0,
        Observed(T0 + 3, up("v1", 4) + up("v2", 1), weights={"v1": 90, "v2": 10}),
        HOLD_10,
        "step",
        data={"canary": 1},
        event="step 1/2: weight 10% (1 instance), pause 60s",
    ),
    Case(
        "data plane: 20 requests are too few to tell, keep going",
        "step",
        0,
        Observed(
            T0 + 1, up("v1", 4) + up("v2", 1), measurements=traffic((2, 0), (18, 0), end=T0 + 1)
        ),
        HOLD_10,
        "step",
        data={**AT_10, "weight_ok": False},
    ),
    Case(
        "data plane: 52 of 498 = 10.4% is within 5 points of 10%",
        "step",
        0,
        Observed(
            T0 + 3, up("v1", 4) + up("v2", 1), measurements=traffic((52, 0), (446, 0), end=T0 + 3)
        ),
        HOLD_10,
        "step",
        data={**AT_10, "weight_ok": False},
        event="data plane canary share 10.4% (52 of 498 requests",
    ),
    Case(
        "step over, weight unverified, 30 requests all to v1 at 50% (p = 1e-9): never a pass",
        "step",
        1,
        Observed(
            T0 + 61, up("v1", 4) + up("v2", 2), measurements=traffic((0, 0), (30, 0), end=T0 + 61)
        ),
        [*BACK, Finish("rolled_back", "")],
        "rolled_back",
        data={**AT_50, "weight_ok": False, "sequential": None},
        config=config([{"weight": 10, "pause": 60}, {"weight": 50, "pause": 60}]),
        reason="step 2: no request reached canary v2 at weight 50% while the service answered 30",
    ),
    Case(
        "step over, weight unverified, 30 requests all to v1 at 10% (p = 4%): may be chance",
        "step",
        0,
        Observed(
            T0 + 61, up("v1", 4) + up("v2", 1), measurements=traffic((0, 0), (30, 0), end=T0 + 61)
        ),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 2), SetWeights({"v1": 90, "v2": 10})],
        "scaling",
        data={**AT_10, "weight_ok": False, "sequential": None},
    ),
    Case(
        "step over (pause 60s), weight unverified, 3 of 30 requests to v2: the step ends",
        "step",
        0,
        Observed(
            T0 + 61, up("v1", 4) + up("v2", 1), measurements=traffic((3, 0), (27, 0), end=T0 + 61)
        ),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 2), SetWeights({"v1": 90, "v2": 10})],
        "scaling",
        data={**AT_10, "weight_ok": False, "sequential": None},
    ),
    Case(
        "scaling: the canary never gets ready within the progress deadline: roll back, say why",
        "scaling",
        0,
        Observed(T0 + 601, up("v1", 4) + up("v2", 1, ready=False), weights={"v1": 100}),
        [*BACK, Finish("aborted", "")],
        "aborted",
        data={"canary": 1},
        reason="scaling: no progress for 601s (progress_deadline 600s): v2 has 0/1 ready; "
        "v2-1 not ready",
    ),
    Case(
        "watch over: no request for v2 while the service answered 200: not serving, roll back",
        "watching",
        2,
        Observed(T0 + 61, up("v1", 4) + up("v2", 4), traffic=200),
        [*BACK, Finish("rolled_back", "")],
        "rolled_back",
        data={**AT_50, "weight": 100, "canary": 4},
        reason="watch: no request reached v2 while the service answered 200",
    ),
    Case(
        "data plane: 250 of 500 at a set 10%: the router is off, abort",
        "step",
        0,
        Observed(
            T0 + 3, up("v1", 4) + up("v2", 1), measurements=traffic((250, 0), (250, 0), end=T0 + 3)
        ),
        [*BACK, Finish("aborted", "")],
        "aborted",
        data={**AT_10, "weight_ok": False},
        reason="canary share 50% (250 of 500 requests",
    ),
    Case(
        "data plane: 0 of 500 at 10%, but the source has no canary series yet: not judged",
        "step",
        0,
        Observed(
            T0 + 3,
            up("v1", 4) + up("v2", 1),
            measurements={
                **traffic((0, 0), (500, 0), end=T0 + 3),
                "v2": Measurement("v2", T0, T0 + 3, complete=False),
            },
        ),
        HOLD_10,
        "step",
        data={**AT_10, "weight_ok": False},
    ),
    Case(
        "data plane still undecided after 61s (281 of 561 at 50%): say so once, keep waiting",
        "step",
        1,
        Observed(
            T0 + 61,
            up("v1", 4) + up("v2", 2),
            measurements=traffic((281, 0), (280, 0), end=T0 + 61),
        ),
        HOLD_50,
        "step",
        data={**AT_50, "weight_ok": False, "weight_since": T0, "sequential": None},
        event="data plane unverified after 61s: canary share 50.1% (281 of 561 requests",
    ),
    Case(
        "pause 60s not over at 30s",
        "step",
        0,
        Observed(
            T0 + 30,
            up("v1", 4) + up("v2", 1),
            measurements=traffic((300, 0), (2700, 0), end=T0 + 30),
        ),
        HOLD_10,
        "step",
        data=AT_10,
    ),
    Case(
        "pause over: scale the canary for 50% (2 of 4) before any weight change",
        "step",
        0,
        Observed(
            T0 + 60,
            up("v1", 4) + up("v2", 1),
            measurements=traffic((600, 0), (5400, 0), end=T0 + 60),
        ),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 2), SetWeights({"v1": 90, "v2": 10})],
        "scaling",
        data=AT_10,
    ),
    Case(
        "analysis not due before its 10s interval",
        "step",
        1,
        Observed(
            T0 + 5, up("v1", 4) + up("v2", 2), measurements=traffic((500, 0), (500, 0), end=T0 + 5)
        ),
        HOLD_50,
        "step",
        data=AT_50,
    ),
    Case(
        "analysis passes 0/812: the last step is done, promote (scale v2 to 4)",
        "step",
        1,
        Observed(
            T0 + 10,
            up("v1", 4) + up("v2", 2),
            measurements=traffic((812, 0), (800, 0), end=T0 + 10),
        ),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 4), SetWeights({"v1": 50, "v2": 50})],
        "promoting",
        data=AT_50,
        event="analysis error_rate passed: error_rate 0 <= max 0.01 over 812 requests",
    ),
    Case(
        "analysis: 5 of 30 requests are below min_samples 50: inconclusive, the step goes on",
        "step",
        1,
        Observed(
            T0 + 10, up("v1", 4) + up("v2", 2), measurements=traffic((30, 0), (30, 0), end=T0 + 10)
        ),
        HOLD_50,
        "step",
        data={**AT_50, "sequential": None},
        event="analysis error_rate inconclusive: error_rate: not enough data, 30 requests",
    ),
    Case(
        "analysis fails 16/800 = 2% > 1%: traffic back to v1 first, then drain v2",
        "step",
        1,
        Observed(
            T0 + 10,
            up("v1", 4) + up("v2", 2),
            measurements=traffic((800, 16), (800, 16), end=T0 + 10),
        ),
        [*BACK, Finish("rolled_back", "")],
        "rolled_back",
        data=AT_50,
        reason="analysis failed: error_rate failed 1 of 1 judged windows (failure_limit 1); "
        "last: error_rate 0.02 > max 0.01 over 800 requests",
    ),
    Case(
        "sequential: canary 6/200 errors vs stable 0/1800 at a 10% share: roll back at once",
        "step",
        0,
        Observed(
            T0 + 10,
            up("v1", 4) + up("v2", 1),
            measurements=traffic((200, 6), (1800, 0), end=T0 + 10),
        ),
        [*BACK, Finish("rolled_back", "")],
        "rolled_back",
        data=AT_10,
        reason="sequential test failed: canary 6/200 errors (3%) vs stable 0/1800 (0%)",
    ),
    Case(
        "same counts with sequential = false: nothing judges errors in a pause step",
        "step",
        0,
        Observed(
            T0 + 10,
            up("v1", 4) + up("v2", 1),
            measurements=traffic((200, 6), (1800, 0), end=T0 + 10),
        ),
        HOLD_10,
        "step",
        data={**AT_10, "sequential": None},
        config=config(sequential=False),
    ),
    Case(
        "sequential: the same error rate on both sides is no evidence",
        "step",
        0,
        Observed(
            T0 + 10,
            up("v1", 4) + up("v2", 1),
            measurements=traffic((200, 6), (1800, 54), end=T0 + 10),
        ),
        HOLD_10,
        "step",
        data=AT_10,
    ),
    Case(
        "a {} pause waits for the operator, however long",
        "step",
        0,
        Observed(T0 + 86400, up("v1", 4) + up("v2", 1)),
        HOLD_10,
        "step",
        data=AT_10,
        config=config([{"weight": 10, "pause": {}}, {"weight": 50}]),
    ),
    Case(
        "promote ends a {} pause: next step scales for 50%",
        "step",
        0,
        Observed(T0 + 5, up("v1", 4) + up("v2", 1), command="promote"),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 2), SetWeights({"v1": 90, "v2": 10})],
        "scaling",
        data=AT_10,
        config=config([{"weight": 10, "pause": {}}, {"weight": 50}]),
        event="promote requested by operator",
    ),
    Case(
        "promote while paused: on to the next step, unpaused (2 canaries ready: set 50%)",
        "step",
        0,
        Observed(T0 + 5, up("v1", 4) + up("v2", 2), command="promote"),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 2), SetWeights({"v1": 50, "v2": 50})],
        "scaling",
        data=AT_10,
        paused=True,
        next_paused=False,
    ),
    Case(
        "promote_full skips every remaining step",
        "step",
        0,
        Observed(T0 + 5, up("v1", 4) + up("v2", 1), command="promote_full"),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 4), SetWeights({"v1": 90, "v2": 10})],
        "promoting",
        data=AT_10,
    ),
    Case(
        "paused by the operator: the pause is over but the step holds",
        "step",
        0,
        Observed(T0 + 61, up("v1", 4) + up("v2", 1)),
        HOLD_10,
        "step",
        data=AT_10,
        paused=True,
    ),
    Case(
        "resume: the step ends at once when its time is up",
        "step",
        0,
        Observed(T0 + 61, up("v1", 4) + up("v2", 1), command="resume"),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 2), SetWeights({"v1": 90, "v2": 10})],
        "scaling",
        data=AT_10,
        paused=True,
        event="resumed by operator",
    ),
    Case(
        "resume while not paused is ignored with an event",
        "step",
        0,
        Observed(T0 + 5, up("v1", 4) + up("v2", 1), command="resume"),
        HOLD_10,
        "step",
        data=AT_10,
        event="resume ignored: not paused",
    ),
    Case(
        "promote while the canary is still starting is ignored with an event",
        "scaling",
        1,
        Observed(T0 + 5, up("v1", 4) + up("v2", 1), command="promote"),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 2), SetWeights({"v1": 90, "v2": 10})],
        "scaling",
        data={**AT_10, "canary": 2},
        event="promote ignored: the canary is not ready yet",
    ),
    Case(
        "abort mid-way: traffic back to v1 first; rolled back (v2 had traffic)",
        "step",
        0,
        Observed(T0 + 5, up("v1", 4) + up("v2", 1), command="abort"),
        [*BACK, Finish("rolled_back", "abort requested by operator")],
        "rolled_back",
        data=AT_10,
    ),
    Case(
        "abort before any traffic moved: aborted",
        "scaling",
        0,
        Observed(T0 + 1, up("v1", 4), command="abort"),
        [*BACK, Finish("aborted", "abort requested by operator")],
        "aborted",
        data={"canary": 1},
    ),
    Case(
        "a canary instance fails its readiness: aborted with its reason",
        "scaling",
        0,
        Observed(T0 + 60, up("v1", 4) + up("v2", 1, failed="not ready after 60s")),
        [*BACK, Finish("aborted", "v2-1 did not become ready: not ready after 60s")],
        "aborted",
        data={"canary": 1},
    ),
    Case(
        "promoting: v2 has 2 of 4 ready, the weights stay",
        "promoting",
        2,
        Observed(T0 + 1, up("v1", 4) + up("v2", 2)),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 4), SetWeights({"v1": 50, "v2": 50})],
        "promoting",
        data={**AT_50, "canary": 4},
    ),
    Case(
        "promoting: all 4 ready, all traffic to v2, then the watch",
        "promoting",
        2,
        Observed(T0 + 2, up("v1", 4) + up("v2", 4)),
        [SetWeights({"v2": 100})],
        "watching",
        data={**AT_50, "canary": 4},
        event="watching v2 for 60s",
    ),
    Case(
        "no watch configured (duration 0): switch, retire v1, completed",
        "promoting",
        2,
        Observed(T0 + 2, up("v1", 4) + up("v2", 4)),
        [
            SetWeights({"v2": 100}),
            ScaleRelease("v1", 0),
            Finish("completed", "v2 serves all traffic"),
        ],
        "completed",
        data={**AT_50, "canary": 4},
        config=config(watch=0),
    ),
    Case(
        "watch: 30/1000 = 3% > 2%: traffic back to warm v1, drain v2",
        "watching",
        2,
        Observed(
            T0 + 10,
            up("v1", 4) + up("v2", 4),
            measurements=traffic((1000, 30), (0, 0), end=T0 + 10),
        ),
        [*BACK, Finish("rolled_back", "")],
        "rolled_back",
        data={**AT_50, "canary": 4, "weight": 100},
        reason="watch: error_rate 0.03 > max 0.02 over 1000 requests",
    ),
    Case(
        "watch over with 0.1% errors: retire v1, completed",
        "watching",
        2,
        Observed(
            T0 + 60, up("v1", 4) + up("v2", 4), measurements=traffic((1000, 1), (0, 0), end=T0 + 60)
        ),
        [ScaleRelease("v1", 0), Finish("completed", "v2 serves all traffic")],
        "completed",
        data={**AT_50, "canary": 4, "weight": 100},
        event="watch held: 1/1000 errors",
    ),
    Case(
        "promote during the watch is ignored with an event",
        "watching",
        2,
        Observed(T0 + 10, up("v1", 4) + up("v2", 4), command="promote"),
        [],
        "watching",
        data={**AT_50, "canary": 4, "weight": 100},
        event="promote ignored: the watch only judges",
    ),
    Case(
        "a step at 100%: v2 to 4 instances, v1 keeps 4 warm and gets nothing",
        "scaling",
        1,
        Observed(T0 + 3, up("v1", 4) + up("v2", 4), weights={"v2": 100}),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 4), SetWeights({"v2": 100})],
        "step",
        data={**AT_10, "canary": 4},
        config=config([{"weight": 10, "pause": 60}, {"weight": 100, "pause": 60}]),
        event="step 2/2: weight 100% (4 instances), pause 60s",
    ),
    Case(
        "a pause-only first step: no canary instance, no traffic",
        "scaling",
        -1,
        Observed(T0, up("v1", 4)),
        [ScaleRelease("v1", 4), ScaleRelease("v2", 0), SetWeights({"v1": 100})],
        "step",
        config=config([{"pause": {}}, {"weight": 50}]),
        event="step 1/2, waiting for `nonstop promote`",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_canary_table(case: Case) -> None:
    spec = RolloutSpec("canary", "v2", "v1", case.config)
    state = state_at(spec, case.phase, case.step, paused=case.paused, **case.data)
    decision = canary.decide(spec, state, case.observed)
    finish = decision.finished
    actions = list(decision.actions)
    if finish is not None and case.reason:
        assert case.reason in finish.reason, finish.reason
        actions[-1] = replace(finish, reason="")
    assert actions == case.actions
    assert decision.state.phase == case.next_phase
    if case.next_paused is not None:
        assert decision.state.paused == case.next_paused
    if case.event:
        assert any(case.event in e for e in decision.events), decision.events
    assert persisted(decision.state) == decision.state


def test_one_error_fails_one_interval_not_every_interval_after_it() -> None:
    """max 0.001, failure_limit 2, 120 canary requests a minute: one error in minute 1 fails
    that minute (1/120); minute 2 is judged on its own 0/120 and passes: no rollback."""
    check = {"metric": "error_rate", "max": 0.001, "min_samples": 100, "failure_limit": 2}
    check["confidence"] = 0  # the raw comparison: one error in 120 requests fails a minute
    steps = [{"weight": 1, "pause": "10m", "analysis": [{**check, "interval": 60}]}]
    spec = RolloutSpec("canary", "v2", "v1", config(steps, sequential=False))
    state = state_at(spec, "step", 0, **{**AT_10, "weight": 1})
    outcomes = []
    for minute, errors in ((1, 1), (2, 0)):
        now, start = T0 + 60 * minute, state.phase_started_at
        counts = traffic((120, errors), (11880, 0), start=start, end=now)
        decision = canary.decide(
            spec, state, Observed(now, up("v1", 4) + up("v2", 1), measurements=counts)
        )
        state = decision.state
        outcomes.append(
            AnalysisRun.from_dict(state.data["analysis"]).checks[0].verdicts[-1].outcome
        )
    assert outcomes == ["fail", "pass"]
    assert state.phase == "step"


def test_inconclusive_for_too_long_pauses_for_a_person() -> None:
    """Six 10 s windows in a row with 3 requests each (pooled: 18 < 50): pause, say why;
    resume measures afresh. Each window starts where the previous one ended."""
    spec = RolloutSpec("canary", "v2", "v1", config(sequential=False))
    state = state_at(spec, "step", 1, **AT_50)
    for k in range(1, 7):
        now, start = T0 + 10 * k, state.phase_started_at
        counts = traffic((3, 0), (3, 0), start=start, end=now)
        decision = canary.decide(
            spec, state, Observed(now, up("v1", 4) + up("v2", 2), measurements=counts)
        )
        state = decision.state
        assert state.phase_started_at == now  # the next window
    assert state.paused
    assert "not enough data, 18 requests < min_samples 50" in decision.events[0]
    assert any(
        "analysis inconclusive: error_rate was inconclusive 6 windows in a row" in e
        for e in decision.events
    )
    resumed = canary.decide(
        spec, state, Observed(T0 + 61, up("v1", 4) + up("v2", 2), command="resume")
    )
    assert not resumed.state.paused
    run = AnalysisRun.from_dict(resumed.state.data["analysis"])
    assert run.phase == "running"


WAITS = [{"weight": 10, "pause": {}}, {"weight": 50, "analysis": [ERROR_RATE]}]
PASSED = {"outcome": "pass", "check": "error_rate", "reason": "error_rate 0 <= max 0.01", "end": 5}
LATER = {**PASSED, "reason": "error_rate 0.002 <= max 0.01", "end": 9}
UNVERIFIED = {**AT_10, "weight_ok": False, "weight_counts": [12, 100]}


def judged(*verdicts: dict[str, Any]) -> dict[str, Any]:
    run = new_run([validate_config_check(ERROR_RATE)]).to_dict()
    run["checks"][0]["verdicts"] = list(verdicts)
    return run


def validate_config_check(check: dict[str, Any]) -> Any:
    return config(steps=[{"weight": 10, "analysis": [check]}]).strategy.canary.steps[0].analysis[0]


@pytest.mark.parametrize(
    ("step", "paused", "data", "line"),
    [
        (
            0,
            False,
            UNVERIFIED,
            "step 1/2 waits for `nonstop promote`; analysis waits for the "
            "data-plane check: canary share 12% (12 of 100 requests, 99% interval",
        ),
        (0, False, AT_10, "step 1/2 waits for `nonstop promote`; no check has judged a window"),
        (
            0,
            False,
            {**AT_10, "background": judged(PASSED, LATER)},
            "step 1/2 waits for `nonstop promote`; last verdict: error_rate passed: "
            "error_rate 0.002",
        ),
        (
            1,
            True,
            {**AT_50, "paused_why": "paused by operator", "analysis": judged(PASSED)},
            "paused for a person (paused by operator); last verdict: error_rate passed: "
            "error_rate 0 ",
        ),
        (
            1,
            False,
            {**AT_50, "analysis": judged(LATER), "background": judged(PASSED)},
            "step, step 2; last verdict: error_rate passed: error_rate 0.002",
        ),
    ],
)
def test_standing_says_what_the_canary_waits_for_and_its_last_real_verdict(
    step: int, paused: bool, data: dict[str, Any], line: str
) -> None:
    spec = RolloutSpec("canary", "v2", "v1", config(WAITS, sequential=False))
    state = persisted(state_at(spec, "step", step, paused=paused, **data))
    assert canary.standing(spec, state).startswith(line)
    assert "never measured" not in canary.standing(spec, state)


def test_a_long_step_restarts_its_measurement_window_every_5_minutes() -> None:
    """The request stream keeps 15 minutes; a step of an hour is judged in 5-minute windows,
    each starting on a whole second, while its pause still counts from the step's start."""
    spec = RolloutSpec("canary", "v2", "v1", config([{"weight": 10, "pause": "1h"}]))
    state = state_at(spec, "step", 0, **AT_10, step_started_at=T0)
    at = T0 + 300.4
    observed = Observed(
        at, up("v1", 4) + up("v2", 1), measurements=traffic((10, 0), (90, 0), end=at)
    )
    decision = canary.decide(spec, state, observed)
    assert (decision.state.phase, decision.state.phase_started_at) == ("step", T0 + 301)
    assert decision.state.data["step_started_at"] == T0
    later = T0 + 3600
    done = canary.decide(spec, decision.state, Observed(later, up("v1", 4) + up("v2", 1)))
    assert done.state.phase == "promoting"


def test_replaying_a_decision_judges_nothing_twice() -> None:
    """After a crash the engine decides again from the persisted state (invariant 4): the same
    actions, and the window judged at t+10 is not counted a second time."""
    spec = RolloutSpec("canary", "v2", "v1", config(sequential=False))
    state = state_at(spec, "step", 1, **AT_50)
    observed = Observed(
        T0 + 10, up("v1", 4) + up("v2", 2), measurements=traffic((30, 0), (30, 0), end=T0 + 10)
    )
    first = canary.decide(spec, state, observed)
    second = canary.decide(spec, persisted(first.state), observed)
    assert first.actions == second.actions == tuple(HOLD_50)
    assert second.state == first.state
    assert second.events == ()
    run = AnalysisRun.from_dict(second.state.data["analysis"])
    assert run.checks[0].inconclusive == 1


def test_a_canary_config_is_required() -> None:
    plain = validate_config({"app": {"name": "shop", "command": "app {port}"}})
    spec = RolloutSpec("canary", "v2", "v1", plain)
    with pytest.raises(
        ConfigError, match=r"strategy.canary: a canary rollout needs a \[strategy.canary\]"
    ):
        canary.initial_state(spec, T0)


def test_preset_steps_and_watch() -> None:
    spec = RolloutSpec("canary", "v2", "v1", config(steps=[], preset="quick", watch=None))
    decision = canary.decide(spec, canary.initial_state(spec, T0), Observed(T0, up("v1", 4)))
    assert "canary v1 -> v2: 4 steps (5%, 25%, 50%, 100%)" in decision.events
    state = state_at(spec, "promoting", 4, **{**AT_50, "canary": 4})
    promoted = canary.decide(spec, state, Observed(T0, up("v1", 4) + up("v2", 4)))
    assert "watching v2 for 30s" in promoted.events  # the preset's watch, not the default 300 s


def test_unknown_phase_is_a_programming_error() -> None:
    spec = RolloutSpec("canary", "v2", "v1", config())
    with pytest.raises(ValueError, match="no phase 'sideways'"):
        canary.decide(spec, state_at(spec, "sideways", 0), Observed(T0))


# --- simulation -------------------------------------------------------------------------------


@dataclass
class World:
    """Routes ``rate`` requests a second by the weights the planner set, among ready instances;
    each release fails its requests at its own error rate (seeded).

    Measurements are counted as the router's request stream does: in whole-second buckets, a
    window "since ``phase_started_at``" snapping outward to whole seconds. The planner decides
    at half past each second, so each second of traffic lands half in one bucket and half in
    the next, and a window started mid-second reaches back half a second."""

    rng: random.Random
    error_rates: dict[str, float]
    rate: int = 200
    now: float = T0 + 0.5
    ready_at: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, int] | None = None
    """What the planner set (and the engine reports back)."""
    lies: bool = False
    """A broken router: it splits traffic evenly whatever the weights say."""
    turns_bad: tuple[float, float] | None = None
    """(time, error rate): v2 fails at that rate from then on."""
    seconds: list[tuple[float, str, int, int]] = field(default_factory=list)

    def apply(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            if isinstance(action, ScaleRelease):
                times = self.ready_at.setdefault(action.release, [])
                del times[action.replicas :]
                times += [self.now + 2] * (action.replicas - len(times))
            elif isinstance(action, SetWeights):
                self.weights = dict(action.weights) if action.weights is not None else None

    def ready(self, release: str) -> int:
        return sum(1 for t in self.ready_at.get(release, []) if t <= self.now)

    def advance(self) -> None:
        weights = {r: w for r, w in (self.weights or {}).items() if w and self.ready(r)}
        if self.lies:
            weights = dict.fromkeys(weights, 50)
        for bucket in (math.floor(self.now), math.floor(self.now) + 1):
            left, todo = self.rate // 2, dict(weights)
            for release, weight in sorted(todo.items()):
                total = sum(todo.values())
                n = binomial(self.rng, left, weight / total)
                errors = binomial(self.rng, n, self.error_rate(release))
                self.seconds.append((bucket, release, n, errors))
                left -= n
                del todo[release]
        self.now += 1

    def error_rate(self, release: str) -> float:
        if release == "v2" and self.turns_bad and self.now >= self.turns_bad[0]:
            return self.turns_bad[1]
        return self.error_rates[release]

    def observe(self, since: float, command: Command | None = None) -> Observed:
        instances: tuple[InstanceView, ...] = ()
        for release, times in self.ready_at.items():
            instances += tuple(
                InstanceView(
                    f"{release}-{i}",
                    release,
                    ready=t <= self.now,
                    ready_since=t if t <= self.now else None,
                )
                for i, t in enumerate(times)
            )
        measurements = {}
        first, end = math.floor(since), math.ceil(self.now)
        for release in self.error_rates:
            rows = [(n, e) for t, r, n, e in self.seconds if r == release and first <= t < end]
            requests, errors = sum(n for n, _ in rows), sum(e for _, e in rows)
            status = {"2xx": requests - errors, "5xx": errors}
            latency = {99.0: 40.0} if requests else {}
            measurements[release] = Measurement(release, first, end, requests, status, 0, latency)
        return Observed(self.now, instances, self.weights, measurements, command=command)

    def canary_errors(self) -> int:
        return sum(e for _, r, _, e in self.seconds if r == "v2")


def simulate(spec: RolloutSpec, world: World, max_ticks: int = 600) -> tuple[Finish, RolloutState]:
    world.apply((ScaleRelease("v1", spec.replicas), SetWeights({"v1": 100})))
    world.now += 2
    state = canary.initial_state(spec, world.now)
    for _ in range(max_ticks):
        decision = canary.decide(spec, state, world.observe(state.phase_started_at))
        world.apply(decision.actions)
        if decision.finished:
            return decision.finished, state
        state = persisted(decision.state)
        world.advance()
    raise AssertionError(f"no finish after {max_ticks} ticks: {state.phase} step {state.step}")


SIM_STEPS = [
    {"weight": 5, "pause": 60, "analysis": [ERROR_RATE]},
    {"weight": 25, "pause": 30, "analysis": [ERROR_RATE]},
    {"weight": 50, "pause": 30},
]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulated_bad_canary_is_rolled_back_early_by_the_sequential_test(seed: int) -> None:
    """v2 fails 5% of its requests, v1 none, 200 requests/s, 5% to the canary: the sequential
    test rolls back during the first step, after a handful of failed requests."""
    spec = RolloutSpec("canary", "v2", "v1", config(SIM_STEPS, watch=30))
    world = World(random.Random(seed), {"v1": 0.0, "v2": 0.05})
    finish, state = simulate(spec, world)
    assert finish.outcome == "rolled_back"
    assert finish.reason.startswith("sequential test failed: canary ")
    assert state.step == 0
    assert world.canary_errors() < 15
    assert world.weights == {"v1": 100}
    assert world.ready_at["v2"] == []


def test_simulated_canary_that_turns_bad_in_its_second_step_is_caught_there() -> None:
    """Fine in step 1, failing 5% of requests from t=70, in step 2 (a pause at the same 5%,
    begun in the same second step 1 ended): every step is a new measurement window, and the
    sequential test keeps judging across them."""
    steps = [{"weight": 5, "pause": 60, "analysis": [ERROR_RATE]}, {"pause": 60}, {"weight": 50}]
    spec = RolloutSpec("canary", "v2", "v1", config(steps, watch=30))
    world = World(random.Random(5), {"v1": 0.0, "v2": 0.0}, turns_bad=(T0 + 70, 0.05))
    finish, state = simulate(spec, world)
    assert finish.outcome == "rolled_back"
    assert finish.reason.startswith("sequential test failed: canary ")
    assert state.step == 1
    assert world.canary_errors() < 15


def test_simulated_bad_canary_without_the_sequential_test_waits_for_the_threshold() -> None:
    spec = RolloutSpec("canary", "v2", "v1", config(SIM_STEPS, watch=30, sequential=False))
    world = World(random.Random(1), {"v1": 0.0, "v2": 0.05})
    finish, _ = simulate(spec, world)
    assert finish.outcome == "rolled_back"
    assert finish.reason.startswith("analysis failed: error_rate failed 1 of ")
    assert "> max 0.01" in finish.reason


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulated_good_canary_completes(seed: int) -> None:
    """Both releases fail 0.1% of requests: every step passes, v2 takes over, v1 retires."""
    spec = RolloutSpec("canary", "v2", "v1", config(SIM_STEPS, watch=30))
    world = World(random.Random(seed), {"v1": 0.001, "v2": 0.001})
    finish, _ = simulate(spec, world)
    assert finish == Finish("completed", "v2 serves all traffic")
    assert world.weights == {"v2": 100}
    assert (len(world.ready_at["v1"]), len(world.ready_at["v2"])) == (0, 4)


def test_simulated_router_that_ignores_weights_aborts() -> None:
    """The data plane sends half the traffic to a canary set at 5%: abort, before any analysis
    trusts that weight."""
    spec = RolloutSpec("canary", "v2", "v1", config(SIM_STEPS, watch=30))
    world = World(random.Random(7), {"v1": 0.001, "v2": 0.001}, lies=True)
    finish, _ = simulate(spec, world)
    assert finish.outcome == "aborted"
    assert "the router does not send what was set" in finish.reason


def test_module_worked_examples() -> None:
    result = doctest.testmod(canary)
    assert result.attempted >= 1
    assert result.failed == 0


def test_a_watch_whose_window_is_never_whole_fails_on_its_third_try_naming_the_query() -> None:
    """Each watch's window is incomplete (the source did not see all of it), its requests
    fine: it is watched again twice, then the rollout rolls back with the Prometheus query in
    the reason (before, it watched again without end)."""
    base = config(sequential=False).model_dump()
    base["metrics"] = {"provider": "prometheus", "prometheus_url": "http://127.0.0.1:9090"}
    spec = RolloutSpec("canary", "v2", "v1", validate_config(base))
    data = {**canary.initial_state(spec, T0).data, "traffic": True, "weight": 100, "canary": 4}
    state = RolloutState("watching", T0, 2, False, data)
    outcomes = []
    for _ in range(3):
        now = state.phase_started_at + 61
        part = Measurement("v2", state.phase_started_at, now, 300, {"2xx": 300}, complete=False)
        decision = canary.decide(
            spec, state, Observed(now, up("v2", 4), measurements={"v2": part}, traffic=None)
        )
        state = decision.state
        outcomes.append(decision.finished.outcome if decision.finished else decision.events[-1])
    assert "watching v2 again for 60s" in outcomes[0]
    assert "watching v2 again for 60s" in outcomes[1]
    assert outcomes[2] == "rolled_back", outcomes
    assert decision.finished is not None
    assert (
        "3 watches of v2 in a row had no complete measurement: Prometheus at "
        "http://127.0.0.1:9090 did not cover a whole window of sum by (status) "
        '(increase(http_requests_total{release="v2"}[...]))' in decision.finished.reason
    )
