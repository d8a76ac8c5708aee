"""The canary compared with the stable release, and latency judged from counts: tables of
worked examples (counts -> p-value; window -> verdict with its reason), then the end of a step
(``conclude``) with a baseline.

Windows are one minute from T0 = 10:00:00 UTC; the canary is v2, the stable release v1."""

from __future__ import annotations

import doctest
import math

import pytest

from nonstop.analysis import compare as compare_module
from nonstop.analysis.checks import conclude, judge, merge, new_run, step
from nonstop.analysis.compare import worse_p_value
from nonstop.analysis.measurement import Measurement
from nonstop.config.schema import CheckConfig

T0 = 1_780_048_800.0  # 2026-05-29 10:00:00 UTC


def window(
    release: str, i: int, requests: int, errors: int = 0, slow: int | None = None
) -> Measurement:
    """The i-th minute of ``release``; with ``slow``, latency counted at 500 ms."""
    status = {"2xx": requests - errors, "5xx": errors}
    le = {} if slow is None else {500.0: requests - slow, math.inf: requests}
    latency = {99.0: 480.0} if requests else {}
    return Measurement(
        release, T0 + 60 * i, T0 + 60 * (i + 1), requests, status, 0, latency, True, le
    )


def test_docstrings() -> None:
    assert doctest.testmod(compare_module).failed == 0


# (canary errors, canary requests, stable errors, stable requests) -> one-sided p-value:
# P(X >= k), X hypergeometric: k + m errors drawn from n_c + n_s requests, n_c of them canary.
P_VALUES = [
    ((9, 18_000, 171, 342_000), 0.548),  # both at 0.05%, the 5% step: as expected
    ((12, 18_000, 171, 342_000), 0.207),  # 0.067% vs 0.05%: not worse at 99.9%
    ((27, 18_000, 171, 342_000), 2.46e-6),  # 0.15% vs 0.05%: worse
    ((1, 1_200, 59, 118_800), 0.453),  # the 1% step: 1 error of 60 on a 1% share
    ((2, 10, 0, 190), 45 / 19_900),  # both errors on a 5% share: C(10,2) / C(200,2)
    ((6, 600, 6, 5_400), 0.000532),  # half the errors on a 10% share
    ((6, 600, 54, 5_400), 0.564),  # 1% on both
    ((0, 100, 5, 1_900), 1.0),  # no canary error: never worse
    ((3, 3, 0, 0), 1.0),  # no stable request: every error is the canary's, p = 1
]


@pytest.mark.parametrize(("counts", "expected"), P_VALUES, ids=[str(c) for c, _ in P_VALUES])
def test_worse_p_value(counts: tuple[int, int, int, int], expected: float) -> None:
    assert worse_p_value(*counts) == pytest.approx(expected, rel=5e-3)


def test_the_p_value_is_exact_against_a_direct_sum() -> None:
    """Summed from math.comb for small counts: the same to 1e-12."""
    for k, n_c, m, n_s in [(3, 40, 2, 60), (1, 5, 4, 95), (5, 20, 0, 30), (2, 50, 7, 50)]:
        bad, total = k + m, n_c + n_s
        direct = sum(
            math.comb(n_c, x) * math.comb(n_s, bad - x) for x in range(k, min(bad, n_c) + 1)
        ) / math.comb(total, bad)
        assert worse_p_value(k, n_c, m, n_s) == pytest.approx(direct, abs=1e-12)


# p99 <= 500 ms from counts: "p99 above 500" is exactly "more than 1% slower than 500".
P99 = CheckConfig(metric="latency", max=500, interval=60, min_samples=100)  # 95%
P99_999 = CheckConfig(metric="latency", max=500, interval=60, min_samples=100, confidence=0.999)
RAW = CheckConfig(metric="latency", max=500, interval=60, min_samples=100, confidence=0)
W0 = "(canary v2, 10:00:00-10:01:00)"

LATENCY = [
    # 1000 requests at 95%: passes with at most 4 slow (P(Bin(1000, 1%) <= 4) = 0.029),
    # fails from 16 (P(>= 16) = 0.049)
    (
        P99,
        1000,
        4,
        "pass",
        "latency_p99 480ms <= max 500ms with 95% confidence: 4 of 1000 requests slower than 500ms "
        f"(0.4%, 95% bounds 0.137%-0.913%, against 1%) {W0}",
    ),
    (
        P99,
        1000,
        5,
        "inconclusive",
        "latency_p99 480ms: not enough data to tell it from the limit 500ms: 5 of 1000 requests "
        f"slower than 500ms (0.5%, 95% bounds 0.197%-1.05%, against 1%) {W0}",
    ),
    (
        P99,
        1000,
        16,
        "fail",
        "latency_p99 480ms > max 500ms with 95% confidence: 16 of 1000 requests slower than 500ms "
        f"(1.6%, 95% bounds 1.01%-2.42%, against 1%) {W0}",
    ),
    # the progressive preset: 99.9%; 1200 requests pass with <= 2 slow, fail from 25
    (
        P99_999,
        1200,
        24,
        "inconclusive",
        "latency_p99 480ms: not enough data to tell it from the limit 500ms: 24 of 1200 requests "
        f"slower than 500ms (2%, 99.9% bounds 0.975%-3.58%, against 1%) {W0}",
    ),
    (
        P99_999,
        1200,
        25,
        "fail",
        "latency_p99 480ms > max 500ms with 99.9% confidence: 25 of 1200 requests slower than "
        f"500ms (2.08%, 99.9% bounds 1.03%-3.69%, against 1%) {W0}",
    ),
    # confidence 0: the percentile as measured, as before
    (RAW, 1000, 16, "pass", f"latency_p99 480ms <= max 500ms over 1000 requests {W0}"),
]


@pytest.mark.parametrize(("check", "n", "slow", "outcome", "reason"), LATENCY)
def test_latency_from_counts(
    check: CheckConfig, n: int, slow: int, outcome: str, reason: str
) -> None:
    verdict = judge(check, window("v2", 0, n, slow=slow))
    assert (verdict.outcome, verdict.reason) == (outcome, reason)


def test_latency_without_counts_is_compared_as_measured() -> None:
    """A source that did not count at max (Prometheus): the percentile against max."""
    verdict = judge(P99, window("v2", 0, 1000))
    assert verdict.reason == f"latency_p99 480ms <= max 500ms over 1000 requests {W0}"


def test_latency_counts_pool_exactly() -> None:
    both = merge(window("v2", 0, 600, slow=3), window("v2", 1, 400, slow=2))
    assert both.latency_le == {500.0: 995, math.inf: 1000}
    assert both.slower_than(500.0) == (5, 1000)
    # a part counted at no bound: the pooled window has no counts
    assert merge(window("v2", 0, 600, slow=3), window("v2", 1, 400)).latency_le == {}


def test_measurement_round_trips_its_counts() -> None:
    m = window("v2", 0, 600, slow=3)
    assert Measurement.from_dict(m.to_dict()) == m


ERR = CheckConfig(metric="error_rate", max=0.001, interval=60, confidence=0.999)


def run_step(
    check: CheckConfig, canary: list[Measurement], stable: list[Measurement] | None
) -> str:
    run = new_run([check])
    for i, window_ in enumerate(canary):
        run, _ = step(run, check, window_, baseline=None if stable is None else stable[i])
    verdict = conclude(run)
    return f"{verdict.outcome}: {verdict.reason}"


# A 30-minute step at 5% of 200 requests/s: 600 canary and 11,400 stable requests a minute.
def minutes(release: str, requests: int, errors: list[int]) -> list[Measurement]:
    return [window(release, i, requests, e) for i, e in enumerate(errors)]


CANARY_AT_HALF = minutes("v2", 600, [1 if i % 3 == 0 else 0 for i in range(30)])  # 10 errors
STABLE_AT_HALF = minutes("v1", 11_400, [6] * 30)  # 180 errors in 342,000: 0.053%
STABLE_CLEAN = minutes("v1", 11_400, [0] * 30)
STABLE_OVER = minutes("v1", 11_400, [30] * 30)  # 0.26%


def test_end_of_step_undecided_beside_a_similar_stable_passes() -> None:
    outcome = run_step(ERR, CANARY_AT_HALF, STABLE_AT_HALF)
    assert outcome.startswith(
        "pass: error_rate: passed 0 judged windows; error_rate not shown below the limit but "
        "canary not worse than stable at 99.9%: canary 10/18000 errors (0.0556%) vs stable "
        "180/342000 (0.0526%), one-sided p = 0.48"
    )
    assert "99.9% bounds 0.000165-0.00134" in outcome  # straddles 0.1%: undecided


def test_end_of_step_undecided_beside_a_clean_stable_fails() -> None:
    outcome = run_step(ERR, CANARY_AT_HALF, STABLE_CLEAN)
    assert outcome.startswith(
        "fail: error_rate: canary worse than stable at 99.9%: canary 10/18000 errors (0.0556%) "
        "vs stable 0/342000 (0%), one-sided p = 0"
    )


def test_end_of_step_with_stable_over_the_limit_is_inconclusive() -> None:
    outcome = run_step(ERR, CANARY_AT_HALF, STABLE_OVER)
    assert outcome.startswith(
        "inconclusive: error_rate: the stable release itself is above the limit (error_rate "
        "0.00263 > max 0.001 over 342000 requests (900 errors; lower 99.9% bound"
    )


def test_end_of_step_without_a_baseline_is_undecided_as_before() -> None:
    outcome = run_step(ERR, CANARY_AT_HALF, None)
    assert outcome.startswith("inconclusive: error_rate over the whole step is undecided")


def test_end_of_step_latency_from_counts_beside_stable() -> None:
    """p99 at the limit on both (6 and 114 slow of 600 and 11,400 a minute, 1%): undecided,
    not worse than stable: passes. 1.5% slow on the canary: its pooled windows fail first."""
    check = CheckConfig(metric="latency", max=500, interval=60, min_samples=100, confidence=0.999)
    stable = [window("v1", i, 11_400, slow=114) for i in range(30)]
    same = [window("v2", i, 600, slow=6) for i in range(30)]
    assert run_step(check, same, stable).startswith(
        "pass: latency_p99: passed 0 judged windows; latency_p99 not shown below the limit but "
        "canary not worse than stable at 99.9%: canary 180/18000 slower than 500ms (1%)"
    )
    slower = [window("v2", i, 600, slow=9) for i in range(30)]
    outcome = run_step(check, slower, stable)
    assert outcome.startswith("fail: latency_p99 failed 3 of 3 judged windows (failure_limit 1)")


def test_latency_bounds_name_every_latency_max() -> None:
    from nonstop.analysis.presets import latency_bounds
    from nonstop.config.schema import CanaryConfig

    assert latency_bounds(CanaryConfig(preset="progressive")) == (500.0, 1000.0)
    assert latency_bounds(CanaryConfig(preset="quick")) == (1000.0,)
    assert latency_bounds(None) == ()
