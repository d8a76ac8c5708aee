"""Query checks in the canary planner: the engine hands in a QueryValue per template through
``observed.queries``; the planner judges it when the check is due. Pure, from a table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from nonstop.analysis.checks import AnalysisRun, QueryValue, new_run
from nonstop.analysis.measurement import Measurement
from nonstop.config.load import validate_config
from nonstop.plan import canary
from nonstop.plan.model import InstanceView, Observed, RolloutSpec, RolloutState

T0 = 1_000.0
Q = "sum(rate(errors{release='{release}'}[{window}]))"
CHECK = {"metric": "query", "query": Q, "max": 0.05, "interval": 5}


def spec_with(steps: list[dict[str, Any]], **canary_cfg: Any) -> RolloutSpec:
    data = {
        "app": {"name": "shop", "command": "app --port {port}", "replicas": 2},
        "strategy": {
            "kind": "canary",
            "canary": {"steps": steps, "sequential": False, **canary_cfg},
        },
    }
    return RolloutSpec("canary", "v2", "v1", validate_config(data))


SPEC = spec_with([{"weight": 50, "pause": 60, "analysis": [CHECK]}])


def in_step(spec: RolloutSpec) -> RolloutState:
    data = dict(canary.initial_state(spec, T0).data)
    data.update(
        weight=50,
        canary=1,
        traffic=True,
        weight_ok=True,
        analysis=new_run(canary.steps(spec)[0].analysis or ()).to_dict(),
        step_started_at=T0,
    )
    return RolloutState("step", T0, 0, False, data)


def observed(now: float, queries: dict[str, QueryValue]) -> Observed:
    instances = tuple(InstanceView(f"{r}-1", r, ready=True, ready_since=T0) for r in ("v1", "v2"))
    counts = {r: Measurement(r, T0, now, 100, {"2xx": 100}) for r in ("v1", "v2")}
    return Observed(now, instances, {"v1": 50, "v2": 50}, counts, queries)


@dataclass
class Case:
    name: str
    now: float
    queries: dict[str, QueryValue]
    phase: str
    """Phase after the decision: ``step`` (still measuring) or ``rolled_back``."""
    verdict: str | None
    """The query check's last verdict: outcome and a piece of its reason (None: not judged)."""


def value(v: float | None, error: str | None = None) -> dict[str, QueryValue]:
    return {Q: QueryValue("v2", T0, T0 + 5, v, error)}


CASES = [
    # 5 s interval: at T0+5 the check is due; 0.25 > max 0.05 fails it, failure_limit 1.
    Case("over the bound", T0 + 5, value(0.25), "rolled_back", "fail: query 0.25 > max 0.05"),
    Case("within the bound", T0 + 5, value(0.01), "step", "pass: query 0.01 <= max 0.05"),
    Case("equal to the bound passes", T0 + 5, value(0.05), "step", "pass: query 0.05 <= max"),
    Case("not due yet", T0 + 4, value(0.9), "step", None),
    Case(
        "the provider's error is the reason",
        T0 + 5,
        value(None, "Prometheus rejected x /: parse error"),
        "step",
        "inconclusive: query: Prometheus rejected x /: parse error",
    ),
    Case(
        "no value at all is never a pass",
        T0 + 5,
        {},
        "step",
        "inconclusive: query: the metrics provider gave no value for this query",
    ),
    Case("NaN (0/0) is inconclusive", T0 + 5, value(float("nan")), "step", "inconclusive: query"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_query_check_table(case: Case) -> None:
    decision = canary.decide(SPEC, in_step(SPEC), observed(case.now, case.queries))
    assert decision.state.phase == case.phase, decision.events
    checks = AnalysisRun.from_dict(decision.state.data["analysis"]).checks
    last = checks[0].last
    if case.verdict is None:
        assert last is None
        return
    assert last is not None
    outcome, _, reason = case.verdict.partition(": ")
    assert last.outcome == outcome
    assert last.reason.startswith(reason), last.reason
    if case.phase == "rolled_back":
        finish = decision.finished
        assert finish is not None
        assert "query 0.25 > max 0.05" in finish.reason


def test_queries_names_the_templates_that_may_judge_now() -> None:
    background = {"metric": "query", "query": "bg", "max": 1}
    spec = spec_with(
        [{"weight": 10, "pause": 5}, {"weight": 50, "analysis": [CHECK, CHECK]}],
        analysis=[background, {"metric": "error_rate", "max": 0.01}],
    )
    state = in_step(spec)
    assert canary.queries(spec, state) == ["bg"]
    assert canary.queries(spec, RolloutState("step", T0, 1, False, state.data)) == ["bg", Q]
    assert canary.queries(spec, RolloutState("promoting", T0, 2, False, state.data)) == ["bg"]
