"""The explain data of a rollout (agent route GET /v1/analysis) and how the CLI prints it,
from planner states made by real decide() calls. Pure: no agent."""

from __future__ import annotations

import io
import json

from rich.console import Console

from nonstop.agent.daemon import analysis_report
from nonstop.analysis.checks import QueryValue
from nonstop.cli import analysis as cli
from nonstop.plan import canary
from nonstop.plan.model import RolloutState
from nonstop.store import RolloutRow
from prometheus.test_canary_queries import CHECK, T0, Q, in_step, observed, spec_with


def row_for(state: RolloutState, status: str, reason: str | None) -> RolloutRow:
    stored = json.loads(json.dumps(state.to_dict()))  # as the store keeps it
    return RolloutRow(7, "canary", "v2", "v1", False, stored, status, reason, T0, T0 + 5, T0 + 5)


def printed(data: dict[str, object], *, history: bool = False) -> str:
    out = io.StringIO()
    original = cli.console
    cli.console = Console(file=out, width=200, highlight=False, color_system=None)
    try:
        cli.render(data, history=history)
    finally:
        cli.console = original
    return out.getvalue()


def test_a_rollout_rolled_back_by_a_query_check() -> None:
    spec = spec_with([{"weight": 50, "pause": 60}], analysis=[CHECK])
    state = in_step(spec)
    first = canary.decide(spec, state, observed(T0 + 5, {Q: QueryValue("v2", T0, T0 + 5, 0.02)}))
    later = first.state
    # The next window: 0.25 > max 0.05, the check fails and the canary is rolled back.
    value = {Q: QueryValue("v2", later.phase_started_at, T0 + 10, 0.25)}
    decision = canary.decide(spec, later, observed(T0 + 10, value))
    assert decision.finished is not None
    data = analysis_report(row_for(decision.state, "rolled_back", decision.finished.reason))

    assert data["rollout"]["id"] == 7
    assert "state" not in data["rollout"]
    assert data["phase"] == "rolled_back"
    assert data["sequential"] is None
    assert [a["name"] for a in data["analyses"]] == ["background"]
    [background] = data["analyses"]
    assert background["phase"] == "failed"
    assert background["verdict"]["outcome"] == "fail"
    [row] = background["rows"]
    assert (row["check"], row["value"], row["threshold"], row["verdict"]) == (
        "query",
        0.25,
        "<= 0.05",
        "fail",
    )
    assert row["reason"].endswith("[1 passed, 1 failed, 0 inconclusive]")
    assert [(h["value"], h["verdict"]) for h in background["history"]] == [
        (0.02, "pass"),
        (0.25, "fail"),
    ]
    assert data["reason"] == (
        "analysis failed: query failed 1 of 2 judged windows (failure_limit 1); last: "
        "query 0.25 > max 0.05 (canary v2, 00:16:45-00:16:50)"
    )

    text = printed(data)
    assert text.splitlines()[0] == "rollout 7 (canary v1 -> v2): rolled back"
    assert "background analysis: failed, verdict fail: query failed 1 of 2" in text
    assert "│ query │ 0       │ 0.25  │ <= 0.05   │ fail    │" in text
    assert "reason: analysis failed: query failed 1 of 2 judged windows" in text
    history = printed(data, history=True)
    assert "│ query │ 0       │ 0.02  │ <= 0.05   │ pass    │" in history


def test_a_running_rollout_with_the_sequential_test_and_a_pending_check() -> None:
    spec = spec_with([{"weight": 50, "pause": 60, "analysis": [CHECK]}], sequential=True)
    state = in_step(spec)
    decision = canary.decide(spec, state, observed(T0 + 2, {}))
    data = analysis_report(row_for(decision.state, "running", None))

    [step] = data["analyses"]
    assert step["name"] == "step 1"
    [row] = step["rows"]
    assert (row["verdict"], row["reason"]) == ("pending", "no window measured yet")
    sequential = data["sequential"]
    assert sequential["rejected"] is False
    assert sequential["threshold"] == 100
    assert sequential["canary"] == {"requests": 100, "errors": 0}
    assert sequential["stable"] == {"requests": 100, "errors": 0}

    text = printed(data)
    assert text.splitlines()[0] == "rollout 7 (canary v1 -> v2): running, phase step of step 1"
    assert "sequential test: e-value " in text
    assert "(rejects at 100, alpha 0.01), not rejected: canary 0/100 errors, stable 0/100" in text
    assert "\nreason:" not in text


def test_a_rollout_without_analysis() -> None:
    state = RolloutState("completed", T0, 0, False, {})
    row = RolloutRow(
        3, "bluegreen", "v2", None, False, state.to_dict(), "completed", "ok", T0, T0, T0
    )
    data = analysis_report(row)
    assert (data["analyses"], data["sequential"]) == ([], None)
    text = printed(data)
    assert text.splitlines()[:2] == [
        "rollout 3 (bluegreen nothing -> v2): completed",
        "no analysis ran in this rollout",
    ]
