"""RequestStats counts requests at or below the latency bounds it is asked for: the binomial
counts a latency check judged with a confidence needs (``Measurement.latency_le``)."""

from __future__ import annotations

import math

import pytest

from nonstop.analysis.checks import judge
from nonstop.config.schema import CheckConfig
from nonstop.drivers.metrics import RequestStats
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream

A = "127.0.0.1:9001"


def stats_with(*ms: tuple[float, float]) -> RequestStats:
    """Requests of v1 as (second, milliseconds)."""
    stats = RequestStats(clock=lambda: 0.0)
    stats.observe_table(RouteTable((Upstream("a", "v1", A, 1),)))
    for ts, duration in ms:
        stats.record(RequestEvent(ts, A, 200, duration))
    return stats


# 1..100 ms in second 200, 101..200 ms in second 201: bound -> requests at or below it.
CASES = [
    (50.0, 49),  # 50 ms itself sits in a 0.5%-wide bucket reaching above 50 ms: counted slower
    (100.0, 99),
    (150.0, 149),
    (250.0, 200),
    (0.5, 0),
]


@pytest.mark.parametrize(("bound", "at_most"), CASES)
def test_counts_at_or_below_a_bound(bound: float, at_most: int) -> None:
    stats = stats_with(*((200.5, float(ms)) for ms in range(1, 101)))
    for ms in range(101, 201):
        stats.record(RequestEvent(201.5, A, 200, float(ms)))
    stats.count_latency_at([bound])
    m = stats.snapshot("v1", 200, 202)
    assert m.latency_le == {bound: at_most, math.inf: 200}
    assert m.slower_than(bound) == (200 - at_most, 200)


def test_without_bounds_no_counts_and_bad_bounds_are_ignored() -> None:
    stats = stats_with((300.5, 5.0))
    assert stats.snapshot("v1", 300, 301).latency_le == {}
    stats.count_latency_at([0.0, -1.0, math.inf, 20.0, 20.0])
    assert stats.latency_bounds == (20.0,)
    assert stats.snapshot("v1", 300, 301).latency_le == {20.0: 1, math.inf: 1}


def test_a_latency_check_judges_the_counts() -> None:
    """990 requests at 100 ms and 10 at 600 ms in one second: exactly 1% slower than 500 ms,
    p99 at the limit: at 95% it cannot be told from it (the raw p99, 100 ms, would pass)."""
    stats = stats_with(*([(400.5, 100.0)] * 990 + [(400.5, 600.0)] * 10))
    stats.count_latency_at([500.0])
    m = stats.snapshot("v1", 400, 401)
    check = CheckConfig(metric="latency", max=500, min_samples=100)
    verdict = judge(check, m)
    assert verdict.outcome == "inconclusive"
    assert "10 of 1000 requests slower than 500ms (1%" in verdict.reason
