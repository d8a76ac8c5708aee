"""Error-rate checks judged with a one-sided confidence bound, from tables: (check, window) ->
verdict with its reason verbatim, then runs of windows -> pooling and the end of a step.

Windows are 60 s long from T0 = 10:00:00 UTC; the limit is 0.1% at 95% unless a case says."""

from __future__ import annotations

import doctest
from dataclasses import dataclass

import pytest

from nonstop.analysis import checks
from nonstop.analysis.checks import conclude, judge, new_run, step, undecided
from nonstop.analysis.measurement import Measurement
from nonstop.config.schema import CheckConfig

T0 = 1_780_048_800.0  # 2026-05-29 10:00:00 UTC


def minute(i: int, requests: int, errors: int = 0) -> Measurement:
    """The i-th one-minute window of canary v2."""
    status = {"2xx": requests - errors, "5xx": errors}
    return Measurement("v2", T0 + 60 * i, T0 + 60 * (i + 1), requests, status)


ERR = CheckConfig(metric="error_rate", max=0.001, interval=60)  # confidence 0.95, min_samples 50
ERR99 = CheckConfig(metric="error_rate", max=0.001, interval=60, confidence=0.99)
FLOOR = CheckConfig(metric="error_rate", min=0.5, interval=60)  # e.g. a share that must stay up
W0 = "(canary v2, 10:00:00-10:01:00)"


@dataclass
class Case:
    name: str
    check: CheckConfig
    data: Measurement
    outcome: str
    reason: str


JUDGE = [
    # 3 in 600: P(X >= 3 | 600, 0.001) = 0.023 < 0.05; lower bound 0.136% > 0.1%
    Case("three errors in 600 fail", ERR, minute(0, 600, 3), "fail",
         "error_rate 0.005 > max 0.001 over 600 requests (3 errors; lower 95% bound 0.00136) "
         f"{W0}"),
    # at 99% the same window cannot tell: 0.023 > 0.01; bounds 0.073%..1.66%
    Case("three errors in 600 at 99%", ERR99, minute(0, 600, 3), "inconclusive",
         "error_rate 0.005: not enough data to tell it from the limit 0.001 over 600 requests "
         f"(3 errors; 99% bounds 0.000728-0.0166) {W0}"),
    # the review's case: one error in a 600-request minute is 0.17%, raw it failed the minute
    Case("one error in 600 cannot tell", ERR, minute(0, 600, 1), "inconclusive",
         "error_rate 0.00167: not enough data to tell it from the limit 0.001 over 600 requests "
         f"(1 errors; 95% bounds 0.0000855-0.00788) {W0}"),
    # no error in 600: the upper bound 1 - 0.05 ** (1/600) = 0.5% is far above 0.1%
    Case("clean but small cannot tell", ERR, minute(0, 600), "inconclusive",
         "error_rate 0: not enough data to tell it from the limit 0.001 over 600 requests "
         f"(0 errors; 95% bounds 0-0.00498) {W0}"),
    # no error in 3000: 1 - 0.05 ** (1/3000) = 0.0998% <= 0.1%
    Case("clean and large enough passes", ERR, minute(0, 3000), "pass",
         f"error_rate 0 <= max 0.001 over 3000 requests (0 errors; upper 95% bound 0.000998) {W0}"),
    # 0.1% measured over 18000: bounds 0.065%..0.148%, at the limit nothing can be told
    Case("right at the limit", ERR, minute(0, 18000, 18), "inconclusive",
         "error_rate 0.001: not enough data to tell it from the limit 0.001 over 18000 requests "
         f"(18 errors; 95% bounds 0.000646-0.00148) {W0}"),
    Case("min_samples first", ERR, minute(0, 12, 12), "inconclusive",
         f"error_rate: not enough data, 12 requests < min_samples 50 {W0}"),
    # a min bound: 40 of 100 "errors" (read: hits) is below 0.5 with 95% (upper 0.487);
    # 70 of 100 is above it (lower 0.616: P(X >= 70 | 100, 0.616) = 0.05)
    Case("below a min", FLOOR, minute(0, 100, 40), "fail",
         f"error_rate 0.4 < min 0.5 over 100 requests (40 errors; upper 95% bound 0.487) {W0}"),
    Case("above a min", FLOOR, minute(0, 100, 70), "pass",
         f"error_rate 0.7 >= min 0.5 over 100 requests (70 errors; lower 95% bound 0.616) {W0}"),
]  # fmt: skip


@pytest.mark.parametrize("case", JUDGE, ids=lambda c: c.name)
def test_judge_with_confidence(case: Case) -> None:
    verdict = judge(case.check, case.data)
    assert (verdict.outcome, verdict.reason) == (case.outcome, case.reason)
    if verdict.outcome != "inconclusive" or "min_samples" not in verdict.reason:
        assert verdict.value == case.data.errors / case.data.requests


def test_undecided_windows_pool_until_the_data_decides() -> None:
    """600 clean requests a minute: undecided at 600, 1200, 1800, 2400 (upper 0.12%), and passed
    at 3000 pooled (0.0998%); the undecided minutes never count towards inconclusive_limit."""
    run = new_run([ERR], inconclusive_limit=2)
    outcomes = []
    for i in range(5):
        run, verdict = step(run, ERR, minute(i, 600))
        outcomes.append((verdict.outcome, verdict.samples))
        assert run.phase == "running"
    assert outcomes == [
        ("inconclusive", 600),
        ("inconclusive", 1200),
        ("inconclusive", 1800),
        ("inconclusive", 2400),
        ("pass", 3000),
    ]
    c = run.checks[0]
    assert (c.passed, c.inconclusive, c.inconclusive_streak) == (1, 4, 0)
    assert c.pending is None
    assert c.judged is not None
    assert c.judged.requests == 3000


def test_thin_windows_still_count_towards_inconclusive_limit() -> None:
    run = new_run([ERR], inconclusive_limit=2)
    run, first = step(run, ERR, minute(0, 10))
    run, second = step(run, ERR, minute(1, 10))
    assert not undecided(first)
    assert not undecided(second)
    assert run.phase == "inconclusive"


def test_a_bad_canary_fails_once_the_pool_shows_it() -> None:
    """0.5% errors, 600 requests a minute: minute 1 has 1 error (undecided), minute 2 brings 3
    more: 4 in 1200, P(X >= 4 | 1200, 0.001) = 0.034 < 0.05 -> fail after 2 minutes."""
    run = new_run([ERR])
    run, v1 = step(run, ERR, minute(0, 600, 1))
    run, v2 = step(run, ERR, minute(1, 600, 3))
    assert (v1.outcome, v2.outcome) == ("inconclusive", "fail")
    assert v2.reason.startswith("error_rate 0.00333 > max 0.001 over 1200 requests (4 errors;")
    assert run.phase == "failed"


CONCLUDE = [
    # (windows, undecided policy, outcome, reason prefix)
    # 3000 clean in one window: passed, and the whole (3000) passes again
    ([minute(0, 3000)], "pause", "pass", "error_rate: passed 1 judged windows"),
    # 3000 clean then 600 with one error: whole 1/3600, upper 0.13% -> cannot tell
    ([minute(0, 3000), minute(1, 600, 1)], "pause", "inconclusive",
     "error_rate over the whole step is undecided: error_rate 0.000278: not enough data to tell "
     "it from the limit 0.001 over 3600 requests (1 errors; 95% bounds"),
    # the same under undecided = "pass": passes, and says on what
    ([minute(0, 3000), minute(1, 600, 1)], "pass", "pass",
     "error_rate: passed 1 judged windows; error_rate not shown above max, passed as "
     'undecided = "pass": error_rate 0.000278: not enough data'),
    # 1200 clean requests never judged: the whole step (1200) is still undecided
    ([minute(0, 600), minute(1, 600)], "pause", "inconclusive",
     "error_rate over the whole step is undecided: error_rate 0: not enough data to tell it"),
    # 2 thin windows: no data is no data, whatever the policy
    ([minute(0, 10), minute(1, 10)], "pass", "inconclusive",
     "error_rate over the whole step is undecided: error_rate: not enough data, 20 requests"),
    ([], "pass", "inconclusive", "error_rate was never measured"),
]  # fmt: skip


@pytest.mark.parametrize(("windows", "policy", "outcome", "reason"), CONCLUDE)
def test_conclude_judges_the_whole_step(
    windows: list[Measurement], policy: str, outcome: str, reason: str
) -> None:
    check = ERR.model_copy(update={"undecided": policy})
    run = new_run([check])
    for window in windows:
        run, _ = step(run, check, window)
    verdict = conclude(run)
    assert verdict.outcome == outcome
    assert verdict.reason.startswith(reason), verdict.reason


def test_a_step_above_the_limit_under_its_failure_limit_pauses_rather_than_passes() -> None:
    """failure_limit 2; one minute of 600 with 4 errors fails (P(X >= 4) = 0.0034), then 1200
    clean requests: the whole step is 4 in 1800 (0.22%), lower bound 0.076%: undecided, and
    not a pass."""
    check = ERR.model_copy(update={"failure_limit": 2})
    run = new_run([check])
    for window in (minute(0, 600, 4), minute(1, 600), minute(2, 600)):
        run, _ = step(run, check, window)
    assert run.phase == "running"
    verdict = conclude(run)
    assert verdict.outcome == "inconclusive"
    assert "over 1800 requests (4 errors; 95% bounds 0.000759-0.00508)" in verdict.reason


def test_raw_comparison_is_kept_with_confidence_zero() -> None:
    raw = ERR.model_copy(update={"confidence": 0.0})
    verdict = judge(raw, minute(0, 600, 1))
    assert verdict.outcome == "fail"
    assert verdict.reason == f"error_rate 0.00167 > max 0.001 over 600 requests {W0}"


def test_module_doc_examples() -> None:
    result = doctest.testmod(checks)
    assert result.attempted >= 2
    assert result.failed == 0
