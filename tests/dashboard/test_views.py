"""What the pages show, from tables: step boundaries, measured weights, per-second points and
the chart cache that computes a settled second once."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonstop.agent.dashboard.views import ChartCache, measured_weights, step_boundaries
from nonstop.drivers.metrics import RequestStats
from nonstop.drivers.metrics.request_stats import new_histogram, percentiles_us
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream

V1, V2 = "127.0.0.1:9001", "127.0.0.1:9002"


def stats_with(events: list[tuple[float, str, int, float]], now: float = 1000.0) -> RequestStats:
    stats = RequestStats(clock=lambda: 0.0)
    stats.observe_table(RouteTable((Upstream("v1-1", "v1", V1, 1), Upstream("v2-1", "v2", V2, 1))))
    for ts, address, status, ms in events:
        stats.record(RequestEvent(ts, address, status, ms))
    return stats


@pytest.mark.parametrize(
    ("messages", "marks"),
    [
        ([], []),
        (["canary v1 -> v2: 2 steps (25%, 50%)"], []),
        (
            ["v2 ready (1/1)", "step 1/2: weight 25% (1 instance)", "step 2/2: weight 50%"],
            ["step 1/2", "step 2/2"],
        ),
        (["analysis said step 3/4 was fine"], []),  # only a headline at the start counts
    ],
)
def test_step_boundaries_come_from_step_headlines(messages: list[str], marks: list[str]) -> None:
    events = [{"ts": float(i), "message": m} for i, m in enumerate(messages)]
    found = step_boundaries(events)
    assert [m["label"] for m in found] == marks
    assert all(events[int(m["ts"])]["message"].startswith(m["label"]) for m in found)


def test_measured_weights_are_shares_of_the_last_ten_seconds() -> None:
    # 3 requests to v1 and 1 to v2 in the window; an old v2 request 60 s earlier is outside it.
    events = [(995.2, V1, 200, 1.0), (996.0, V1, 200, 1.0), (999.5, V1, 200, 1.0)]
    events += [(998.0, V2, 200, 1.0), (940.0, V2, 200, 1.0)]
    measured = measured_weights(stats_with(events), ["v1", "v2"], 1000.0)
    assert measured == {"window_s": 10.0, "requests": 4, "percent": {"v1": 75.0, "v2": 25.0}}


def test_measured_weights_without_traffic_are_unknown_not_zero() -> None:
    measured = measured_weights(stats_with([]), ["v1"], 1000.0)
    assert measured["percent"] == {"v1": None}


def test_seconds_worked_example() -> None:
    # second 100: two requests (1 ms, 3 ms), one 502; second 102: one request; 101 has none.
    events = [(100.2, V2, 200, 1.0), (100.7, V2, 200, 3.0), (100.9, V2, 502, 2.0)]
    events += [(102.5, V2, 200, 10.0)]
    points = stats_with(events).seconds("v2", 100.0, 103.0)
    assert [(p.second, p.requests, p.errors) for p in points] == [(100, 3, 1), (102, 1, 0)]
    assert points[0].p50_ms == pytest.approx(2.0, rel=0.02)
    assert points[0].p99_ms == pytest.approx(3.0, rel=0.02)
    assert points[1].p50_ms == pytest.approx(10.0, rel=0.02)


class CountingStats(RequestStats):
    """Counts the seconds asked for, to show settled ones are not computed twice."""

    asked: list[tuple[float, float]]

    def seconds(self, release: str, since: float, until: float) -> Any:
        self.asked.append((since, until))
        return super().seconds(release, since, until)


def test_the_chart_cache_computes_a_settled_second_once() -> None:
    stats = CountingStats(clock=lambda: 0.0)
    stats.asked = []
    stats.observe_table(RouteTable((Upstream("v2-1", "v2", V2, 1),)))
    for second in range(100, 120):
        stats.record(RequestEvent(second + 0.5, V2, 200, 1.0))
    now = [120.0]
    cache = ChartCache(stats, clock=lambda: now[0])
    first = cache.points("v2", 100.0, 121.0)
    assert [p.second for p in first] == list(range(100, 120))
    now[0] = 125.0
    again = cache.points("v2", 100.0, 126.0)
    assert again == first
    # The second call only read from where the first settled (120 - 3 = 117) on.
    assert stats.asked == [(100, 121.0), (117, 126.0)]


@given(
    st.lists(st.integers(min_value=0, max_value=600_000_000), min_size=1, max_size=300),
    st.sampled_from([(50.0, 99.0), (1.0, 100.0), (90.0,), (99.9, 99.99)]),
)
@settings(max_examples=200, deadline=None)
def test_percentiles_match_the_librarys_walk(values: list[int], wanted: tuple[float, ...]) -> None:
    hist = new_histogram()
    for value in values:
        hist.record_value(value)
    library = hist.get_percentile_to_value_dict(list(wanted))
    assert percentiles_us(hist, wanted) == [library[p] for p in wanted]
