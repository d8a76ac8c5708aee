"""The data-plane weight check and the post-promotion watch, from tables of worked examples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonstop.analysis.measurement import Measurement
from nonstop.analysis.watch import watch_verdict
from nonstop.analysis.weight import weight_verdict, wilson_interval
from nonstop.config.schema import WatchConfig

T0 = 1_780_048_800.0  # 2026-05-29 10:00:00 UTC

WEIGHT_CASES = [
    # set 5%, tolerance 0.05 -> the band is [0%, 10%]; 99% Wilson intervals
    (5, 48, 1000, 0.05, "pass",
     "canary share 4.8% (48 of 1000 requests, 99% interval 3.34%-6.86%) is within 5 points of "
     "the set weight 5%"),
    (5, 121, 1000, 0.05, "inconclusive",
     "canary share 12.1% (121 of 1000 requests, 99% interval 9.69%-15%): cannot tell yet whether "
     "it is within 5 points of the set weight 5%"),
    # a router doing round robin between two instances instead of honouring 5%
    (5, 500, 1000, 0.05, "fail",
     "canary share 50% (500 of 1000 requests, 99% interval 45.9%-54.1%) is not within 5 points "
     "of the set weight 5%: the router does not send what was set"),
    # few requests: 3 of 20 is 15%, far off, but the interval 3.88%-43.6% still reaches the band
    (5, 3, 20, 0.05, "inconclusive",
     "canary share 15% (3 of 20 requests, 99% interval 3.88%-43.6%): cannot tell yet whether it "
     "is within 5 points of the set weight 5%"),
    (5, 3, 19, 0.05, "inconclusive",
     "weight: not enough data, 19 requests < min_samples 20 (set weight 5%)"),
    # the canary gets nothing at all although it was set to 25%
    (25, 0, 400, 0.05, "fail",
     "canary share 0% (0 of 400 requests, 99% interval 0%-1.63%) is not within 5 points of the "
     "set weight 25%: the router does not send what was set"),
    # 0% and 100% are fine edges: the Wilson interval is good at 0 and n successes
    (0, 0, 1000, 0.05, "pass",
     "canary share 0% (0 of 1000 requests, 99% interval 0%-0.659%) is within 5 points of the set "
     "weight 0%"),
    # tolerance 0 can never pass, but a share exactly on target must not fail either
    (0, 0, 500, 0.0, "inconclusive",
     "canary share 0% (0 of 500 requests, 99% interval 0%-1.31%): cannot tell yet whether it is "
     "within 0 points of the set weight 0%"),
    (100, 1000, 1000, 0.05, "pass",
     "canary share 100% (1000 of 1000 requests, 99% interval 99.3%-100%) is within 5 points of "
     "the set weight 100%"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("weight", "canary", "total", "tolerance", "outcome", "reason"), WEIGHT_CASES
)
def test_weight_verdict(
    weight: int, canary: int, total: int, tolerance: float, outcome: str, reason: str
) -> None:
    verdict = weight_verdict(weight, canary, total, tolerance, min_samples=20)
    assert (verdict.outcome, verdict.reason, verdict.check) == (outcome, reason, "weight")
    assert verdict.threshold == weight / 100
    assert verdict.samples == total


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # worked: p = 0.048, z = 2.5758, z^2/n = 0.006635, centre = 0.05098, half = 0.01761
        (48, 1000, 0.03337, 0.06859),
        (0, 100, 0.0, 0.0622),
        (100, 100, 0.9378, 1.0),
        (0, 0, 0.0, 1.0),
    ],
)
def test_wilson_interval(k: int, n: int, lo: float, hi: float) -> None:
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=5e-5)


WATCH = WatchConfig(duration=300, max_error_rate=0.02, min_requests=20)


def promoted(requests: int, errors: int) -> Measurement:
    status = {"2xx": requests - errors, "5xx": errors}
    return Measurement("v2", T0, T0 + 300, requests, status)


@pytest.mark.parametrize(
    ("requests", "errors", "outcome", "reason"),
    [
        # 12/500 = 0.024 > 0.02
        (500, 12, "fail",
         "watch: error_rate 0.024 > max 0.02 over 500 requests (promoted v2, 10:00:00-10:05:00)"),
        (500, 3, "pass",
         "watch: error_rate 0.006 <= max 0.02 over 500 requests (promoted v2, 10:00:00-10:05:00)"),
        # 5 of 10 failing is alarming, but 10 < min_requests 20: keep watching, do not guess
        (10, 5, "inconclusive",
         "watch: error_rate: not enough data, 10 requests < min_requests 20 "
         "(promoted v2, 10:00:00-10:05:00)"),
    ],
)  # fmt: skip
def test_watch_verdict(requests: int, errors: int, outcome: str, reason: str) -> None:
    verdict = watch_verdict(WATCH, promoted(requests, errors))
    assert (verdict.outcome, verdict.reason, verdict.check) == (outcome, reason, "watch")


@settings(deadline=None)
@given(st.integers(0, 100), st.integers(1, 5000), st.floats(0, 1), st.floats(0, 0.5))
def test_weight_verdict_never_contradicts_the_point_estimate(
    weight: int, total: int, share: float, tolerance: float
) -> None:
    canary = round(total * share)
    verdict = weight_verdict(weight, canary, total, tolerance, min_samples=1)
    off = abs(canary / total - weight / 100)
    if verdict.outcome == "pass":
        assert off <= tolerance + 1e-12
    if verdict.outcome == "fail":
        assert off > tolerance
