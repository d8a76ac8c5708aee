"""Threshold checks from tables: (check, window) -> verdict, then runs of windows -> phase.

Windows are 10 s long from T0 = 10:00:00 UTC; every reason is asserted verbatim, because the
reason is what a person reads when a deploy is rolled back."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonstop.analysis.checks import (
    HISTORY,
    AnalysisRun,
    QueryValue,
    check_name,
    conclude,
    judge,
    new_run,
    pool,
    step,
    step_sequential,
)
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.verdict import Verdict
from nonstop.config.schema import CheckConfig

T0 = 1_780_048_800.0  # 2026-05-29 10:00:00 UTC


def window(i: int, requests: int, errors: int = 0, p99: float | None = None) -> Measurement:
    """The i-th 10 s window of canary v2."""
    latency = {} if p99 is None else {50.0: p99 / 4, 99.0: p99, 100.0: p99 * 2}
    status = {"2xx": requests - errors, "5xx": errors}
    return Measurement("v2", T0 + 10 * i, T0 + 10 * (i + 1), requests, status, 0, latency)


ERR = CheckConfig(
    metric="error_rate", max=0.001, confidence=0
)  # raw: min_samples 50, failure_limit 1
P99 = CheckConfig(metric="latency", max=500)
BAND = CheckConfig(metric="query", query="sum(rate(x[1m]))", min=10, max=20, min_samples=5)


@dataclass
class Case:
    name: str
    check: CheckConfig
    data: Measurement | QueryValue
    outcome: str
    reason: str
    value: float | None = None


JUDGE_CASES = [
    # 21 errors in 412 requests: 21/412 = 0.05097 > 0.001
    Case("error rate over max", ERR, window(0, 412, 21), "fail",
         "error_rate 0.051 > max 0.001 over 412 requests (canary v2, 10:00:00-10:00:10)", 21 / 412),
    Case("no errors passes", ERR, window(0, 412), "pass",
         "error_rate 0 <= max 0.001 over 412 requests (canary v2, 10:00:00-10:00:10)", 0.0),
    # exactly at the bound passes: 1/1000 = 0.001
    Case("equal to max passes", ERR, window(0, 1000, 1), "pass",
         "error_rate 0.001 <= max 0.001 over 1000 requests (canary v2, 10:00:00-10:00:10)", 0.001),
    # 12 requests all failing is still not enough data: the sequential test covers that case
    Case("fewer than min_samples", ERR, window(1, 12, 12), "inconclusive",
         "error_rate: not enough data, 12 requests < min_samples 50 (canary v2, 10:00:10-10:00:20)"),  # noqa: E501
    Case("no requests at all", ERR, window(0, 0), "inconclusive",
         "error_rate: not enough data, 0 requests < min_samples 50 (canary v2, 10:00:00-10:00:10)"),
    Case("p99 over max", P99, window(0, 200, p99=612.4), "fail",
         "latency_p99 612ms > max 500ms over 200 requests (canary v2, 10:00:00-10:00:10)", 612.4),
    Case("p99 under max", P99, window(0, 200, p99=87.25), "pass",
         "latency_p99 87.2ms <= max 500ms over 200 requests (canary v2, 10:00:00-10:00:10)", 87.25),
    # p99.9 asked, only p100 recorded above it: the smallest recorded percentile >= 99.9 is used
    Case("p99.9 reads p100", CheckConfig(metric="latency", percentile=99.9, max=1000),
         window(0, 200, p99=600), "fail",
         "latency_p99.9 1200ms > max 1000ms over 200 requests (canary v2, 10:00:00-10:00:10)",
         1200.0),
    Case("requests but no latency", P99, window(0, 200), "inconclusive",
         "latency_p99: no latency recorded over 200 requests (canary v2, 10:00:00-10:00:10)"),
    Case("query inside band", BAND, QueryValue("v2", T0, T0 + 10, 12.5, samples=9), "pass",
         "query 12.5 >= min 10 and <= max 20 (canary v2, 10:00:00-10:00:10)", 12.5),
    Case("query under min", BAND, QueryValue("v2", T0, T0 + 10, 9.99), "fail",
         "query 9.99 < min 10 (canary v2, 10:00:00-10:00:10)", 9.99),
    Case("query provider error", BAND,
         QueryValue("v2", T0, T0 + 10, None, error="prometheus: connection refused"),
         "inconclusive", "query: prometheus: connection refused (canary v2, 10:00:00-10:00:10)"),
    Case("query NaN (0/0 in PromQL)", BAND, QueryValue("v2", T0, T0 + 10, float("nan")),
         "inconclusive", "query: query returned NaN (canary v2, 10:00:00-10:00:10)"),
    Case("query no data", BAND, QueryValue("v2", T0, T0 + 10, None), "inconclusive",
         "query: query returned no data (canary v2, 10:00:00-10:00:10)"),
    Case("query with too few samples", BAND, QueryValue("v2", T0, T0 + 10, 15, samples=4),
         "inconclusive",
         "query: not enough data, 4 samples < min_samples 5 (canary v2, 10:00:00-10:00:10)"),
]  # fmt: skip


@pytest.mark.parametrize("case", JUDGE_CASES, ids=lambda c: c.name)
def test_judge(case: Case) -> None:
    verdict = judge(case.check, case.data)
    assert (verdict.outcome, verdict.reason) == (case.outcome, case.reason)
    assert verdict.check == check_name(case.check)
    if case.value is None:
        assert verdict.value is None
    else:
        assert verdict.value == pytest.approx(case.value)
    assert (verdict.start, verdict.end) == (case.data.start, case.data.end)


@dataclass
class RunCase:
    name: str
    check: CheckConfig
    windows: list[Measurement]
    outcomes: list[str]
    phases: list[str]
    inconclusive_limit: int = 3


RUN_CASES = [
    RunCase("failure_limit 1: the first failing window fails the check", ERR,
            [window(0, 100), window(1, 100, 5)], ["pass", "fail"], ["running", "failed"]),
    # failure_limit 2 counts failures in total, not in a row (as Argo's failureLimit)
    RunCase("failure_limit 2: fails on the second failing window, not in a row",
            CheckConfig(metric="error_rate", max=0.001, failure_limit=2, confidence=0),
            [window(0, 100, 5), window(1, 100), window(2, 100, 5)],
            ["fail", "pass", "fail"], ["running", "running", "failed"]),
    RunCase("three thin windows in a row hit inconclusive_limit 3", ERR,
            [window(0, 10), window(1, 10), window(2, 10)],
            ["inconclusive"] * 3, ["running", "running", "inconclusive"], inconclusive_limit=3),
    # pooling: 20 + 20 requests < 50, then + 20 = 60 >= 50 is judged over 10:00:00-10:00:30
    RunCase("thin windows pool until min_samples, then judge (streak resets)", ERR,
            [window(0, 20), window(1, 20), window(2, 20, 1), window(3, 10), window(4, 10)],
            ["inconclusive", "inconclusive", "fail", "inconclusive", "inconclusive"],
            ["running", "running", "failed", "failed", "failed"]),
    RunCase("a failed check stays failed when later windows pass", ERR,
            [window(0, 100, 9), window(1, 100)], ["fail", "pass"], ["failed", "failed"]),
]  # fmt: skip


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: c.name)
def test_step_phases(case: RunCase) -> None:
    run = new_run([case.check], inconclusive_limit=case.inconclusive_limit)
    outcomes, phases = [], []
    for w in case.windows:
        run, verdict = step(run, case.check, w)
        outcomes.append(verdict.outcome)
        phases.append(run.phase)
    assert (outcomes, phases) == (case.outcomes, case.phases)
    assert AnalysisRun.from_dict(run.to_dict()) == run


def test_pooled_window_is_judged_over_its_whole_span() -> None:
    # 20 + 20 + 20 requests with 1 error: 1/60 = 0.0167 > 0.001 over 10:00:00-10:00:30
    run = new_run([ERR])
    for w in (window(0, 20), window(1, 20), window(2, 20, 1)):
        run, verdict = step(run, ERR, w)
    assert verdict.reason == (
        "error_rate 0.0167 > max 0.001 over 60 requests (canary v2, 10:00:00-10:00:30)"
    )
    assert run.checks[0].pending is None


def grown(i: int, seconds: int, requests: int) -> Measurement:
    """Canary v2 counted from the start of window i for ``seconds`` (a cumulative feed)."""
    start = T0 + 10 * i
    return Measurement("v2", start, start + seconds, requests, {"2xx": requests})


POOL_CASES = [
    # (carried, pending, new) -> (carried after, requests judged, span judged)
    ("nothing pending", None, None, window(1, 30), None, 30, (10, 20)),
    # the next window: the pending one moves into carried and both are judged together
    ("next window", None, window(0, 20, 1, p99=300), window(1, 30, 0, p99=200), 20, 50, (0, 20)),
    ("next after carried", window(0, 20), window(1, 10), window(2, 5), 30, 35, (0, 30)),
    # the pending window grown (counts since a fixed start): it replaces the pending one
    ("grown", None, grown(0, 10, 20), grown(0, 20, 45), None, 45, (0, 20)),
    # carried windows (an earlier step's) stay added while the new window grows
    ("grown after carried", grown(0, 60, 30), grown(6, 10, 5), grown(6, 20, 12), 30, 42, (0, 80)),
    ("another release starts over", window(0, 5), window(1, 20),
     Measurement("v3", T0 + 20, T0 + 30, 5, {"2xx": 5}), None, 5, (20, 30)),
    # partly overlapping the pending window: adding it would count requests twice
    ("overlap starts over", window(0, 5), window(1, 20),
     Measurement("v2", T0 + 15, T0 + 30, 7, {"2xx": 7}), None, 7, (15, 30)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("carried", "pending", "new", "carried_after", "requests", "span"),
    [case[1:] for case in POOL_CASES],
    ids=[case[0] for case in POOL_CASES],
)
def test_pool(
    carried: Measurement | None,
    pending: Measurement | None,
    new: Measurement,
    carried_after: int | None,
    requests: int,
    span: tuple[float, float],
) -> None:
    kept, judged = pool(carried, pending, new)
    assert (None if kept is None else kept.requests) == carried_after
    assert (judged.requests, judged.start - T0, judged.end - T0) == (requests, *span)


def test_pooled_percentile_is_the_higher_part() -> None:
    _, judged = pool(None, window(0, 20, 1, p99=300), window(1, 30, 0, p99=200))
    assert (judged.latency(99), judged.errors) == (300, 1)


def test_cumulative_feed_across_a_step_pools_consistently() -> None:
    # step 1 ends with 30 requests since 10:00:00 (too few); step 2 is counted from 10:01:00.
    # Every evaluation of step 2 adds step 1's 30 until a window is judged.
    run = new_run([ERR])
    judged = []
    for m in (grown(0, 60, 30), grown(6, 10, 10), grown(6, 20, 15), grown(6, 30, 25)):
        run, verdict = step(run, ERR, m)
        judged.append((verdict.outcome, verdict.samples))
    assert judged == [("inconclusive", 30), ("inconclusive", 40), ("inconclusive", 45),
                      ("pass", 55)]  # fmt: skip
    assert (run.checks[0].pending, run.checks[0].carried) == (None, None)


def test_identical_checks_are_one_and_unknown_checks_are_added() -> None:
    run = new_run([ERR, ERR, P99])
    assert [c.name for c in run.checks] == ["error_rate", "latency_p99"]
    run, _ = step(run, BAND, QueryValue("v2", T0, T0 + 10, 15.0))
    assert [c.name for c in run.checks] == ["error_rate", "latency_p99", "query"]


def test_new_run_rejects_a_zero_inconclusive_limit() -> None:
    with pytest.raises(ValueError, match="inconclusive_limit must be >= 1, got 0"):
        new_run([ERR], inconclusive_limit=0)


def conclude_after(check_windows: list[tuple[CheckConfig, Measurement]]) -> Verdict:
    run = new_run(dict.fromkeys(c for c, _ in check_windows))
    for check, w in check_windows:
        run, _ = step(run, check, w)
    return conclude(run)


def test_conclude_passes_when_every_check_judged_and_none_failed() -> None:
    verdict = conclude_after([(ERR, window(0, 100)), (P99, window(0, 100, p99=100))])
    assert (verdict.outcome, verdict.reason) == (
        "pass",
        "error_rate, latency_p99: passed 2 judged windows",
    )


def test_conclude_fails_with_the_failing_window() -> None:
    verdict = conclude_after([(ERR, window(0, 100)), (ERR, window(1, 100, 2))])
    assert verdict.outcome == "fail"
    assert verdict.reason == (
        "error_rate failed 1 of 2 judged windows (failure_limit 1); last: error_rate 0.02 > max "
        "0.001 over 100 requests (canary v2, 10:00:10-10:00:20)"
    )


def test_conclude_is_inconclusive_when_a_check_never_had_enough_data() -> None:
    verdict = conclude_after([(ERR, window(0, 100)), (P99, window(0, 10, p99=100))])
    assert verdict.outcome == "inconclusive"
    assert verdict.reason.startswith(
        "latency_p99 never had enough data to judge (1 inconclusive windows); last: latency_p99: "
        "not enough data, 10 requests < min_samples 50"
    )


@pytest.mark.parametrize(
    ("windows", "reason"),
    [
        ([], "error_rate was never measured"),
        # failure_limit 2: one failing window neither fails the check nor passes the step
        ([window(0, 100, 5)], "error_rate had no passing window (1 failed, below failure_limit 2; "
         "0 inconclusive); last: error_rate 0.05 > max 0.001 over 100 requests "
         "(canary v2, 10:00:00-10:00:10)"),
    ],
)  # fmt: skip
def test_conclude_without_a_passing_window(windows: list[Measurement], reason: str) -> None:
    check = CheckConfig(metric="error_rate", max=0.001, failure_limit=2, confidence=0)
    run = new_run([check])
    for w in windows:
        run, _ = step(run, check, w)
    assert (conclude(run).outcome, conclude(run).reason) == ("inconclusive", reason)


def test_conclude_passes_despite_failures_below_the_limit() -> None:
    check = CheckConfig(metric="error_rate", max=0.001, failure_limit=2, confidence=0)
    run = new_run([check])
    for w in (window(0, 100, 5), window(1, 100)):
        run, _ = step(run, check, w)
    assert conclude(run).outcome == "pass"


def test_conclude_reports_an_inconclusive_streak() -> None:
    run = new_run([ERR], inconclusive_limit=2)
    for i in range(2):
        run, _ = step(run, ERR, window(i, 1))
    verdict = conclude(run)
    assert (run.phase, verdict.outcome) == ("inconclusive", "inconclusive")
    assert verdict.reason.startswith(
        "error_rate was inconclusive 2 windows in a row (inconclusive_limit 2)"
    )


def test_query_value_round_trips() -> None:
    value = QueryValue("v2", T0, T0 + 10, None, error="timeout", samples=3)
    assert QueryValue.from_dict(value.to_dict()) == value


def test_history_is_bounded_but_counts_are_not() -> None:
    run = new_run([ERR])
    for i in range(HISTORY + 10):
        run, _ = step(run, ERR, window(i, 100))
    kept = run.checks[0]
    assert (len(kept.verdicts), kept.passed) == (HISTORY, HISTORY + 10)
    assert kept.verdicts[0].start == window(10, 100).start


def test_a_whole_run_survives_a_json_journal() -> None:
    run = new_run([ERR, P99, BAND])
    run, _ = step(run, ERR, window(0, 20))  # pending, pooled later
    run, _ = step(run, P99, window(0, 200, p99=612.4))
    run, _ = step(run, BAND, QueryValue("v2", T0, T0 + 10, None, error="timeout"))
    stable = Measurement("v1", T0, T0 + 10, 3800, {"2xx": 3800})
    run, _ = step_sequential(run, window(0, 200, 3), stable)
    assert AnalysisRun.from_dict(json.loads(json.dumps(run.to_dict()))) == run


@settings(deadline=None)
@given(
    st.integers(0, 5000),
    st.floats(0, 1),
    st.floats(0, 0.2),
    st.integers(1, 200),
)
def test_error_rate_verdict_agrees_with_arithmetic(
    requests: int, error_share: float, max_rate: float, min_samples: int
) -> None:
    errors = int(requests * error_share)
    check = CheckConfig(metric="error_rate", max=max_rate, min_samples=min_samples, confidence=0)
    verdict = judge(check, window(0, requests, errors))
    if requests < min_samples:
        expected = "inconclusive"
    else:
        expected = "fail" if errors / requests > max_rate else "pass"
    assert verdict.outcome == expected
    assert Verdict.from_dict(json.loads(json.dumps(verdict.to_dict()))) == verdict
