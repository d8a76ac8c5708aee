"""RequestStats and its Prometheus exposition, from worked examples."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nonstop.drivers.metrics import UNKNOWN, UNROUTED, RequestStats, register_request_metrics
from nonstop.drivers.metrics.request_stats import status_class
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream

A, B, C = "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"
ROUTES = RouteTable((Upstream("a", "v1", A, 9), Upstream("b", "v2", B, 1)))


def ev(ts: float, upstream: str | None, status: int = 200, ms: float = 1.0) -> RequestEvent:
    return RequestEvent(ts, upstream, status, ms, proxy_error=upstream is None and status >= 500)


def stats_with(*events: RequestEvent, window: int = 900) -> RequestStats:
    stats = RequestStats(window=window)
    stats.observe_table(ROUTES)
    for event in events:
        stats.record(event)
    return stats


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "2xx"),
        (204, "2xx"),
        (101, "1xx"),
        (302, "3xx"),
        (404, "4xx"),
        (599, "5xx"),
        (0, "other"),
        (600, "other"),
    ],
)
def test_status_classes(status: int, expected: str) -> None:
    assert status_class(status) == expected


# (events, release, since, until) -> (requests, status, proxy_errors, start, end)
CASES = [
    pytest.param(
        [ev(100.2, A), ev(100.7, A), ev(101.5, A, 500)],
        "v1", 100.0, 102.0,
        (3, {"2xx": 2, "5xx": 1}, 0, 100.0, 102.0),
        id="two ok and an upstream 500",
    ),
    pytest.param(
        [ev(100.2, A), ev(100.7, B), ev(101.5, None, 502)],
        "v2", 100.0, 102.0,
        (1, {"2xx": 1}, 0, 100.0, 102.0),
        id="only the release asked for",
    ),
    pytest.param(
        [ev(100.2, A), ev(101.5, None, 502), ev(101.6, None, 503)],
        UNROUTED, 100.0, 102.0,
        (2, {"5xx": 2}, 2, 100.0, 102.0),
        id="router's own errors are unrouted",
    ),
    pytest.param(
        [ev(99.9, A), ev(100.2, A), ev(101.0, A), ev(102.0, A)],
        "v1", 100.5, 101.5,
        (2, {"2xx": 2}, 0, 100.0, 102.0),
        id="edges snap outward to whole seconds",
    ),
    pytest.param(
        [ev(100.0, A), ev(105.0, A)],
        "v1", 101.0, 105.0,
        (0, {}, 0, 101.0, 105.0),
        id="nothing in the window",
    ),
    pytest.param(
        [ev(100.0, C)],
        UNKNOWN, 100.0, 101.0,
        (1, {"2xx": 1}, 0, 100.0, 101.0),
        id="address no table named",
    ),
    pytest.param(
        [ev(100.0, A)],
        "v9", 100.0, 101.0,
        (0, {}, 0, 100.0, 101.0),
        id="release never seen",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("events", "release", "since", "until", "expected"), CASES)
def test_snapshot_counts(
    events: list[RequestEvent],
    release: str,
    since: float,
    until: float,
    expected: tuple[int, dict[str, int], int, float, float],
) -> None:
    m = stats_with(*events).snapshot(release, since, until)
    assert (m.requests, dict(m.status), m.proxy_errors, m.start, m.end) == expected
    assert m.release == release
    assert bool(m.latency_ms) == (m.requests > 0)


def test_percentiles_are_within_one_percent_above() -> None:
    # 100 requests at 1, 2, ..., 100 ms in one second.
    stats = stats_with(*(ev(200.5, A, ms=float(ms)) for ms in range(1, 101)))
    latency = stats.snapshot("v1", 200, 201).latency_ms
    for percentile, exact in [(50, 50), (90, 90), (95, 95), (99, 99), (99.9, 100), (100, 100)]:
        assert exact <= latency[percentile] <= exact * 1.01, percentile


def test_latency_merges_across_seconds() -> None:
    # 90 fast requests in second 300, 10 slow ones in second 301.
    events = [ev(300.1, A, ms=2.0)] * 90 + [ev(301.1, A, ms=400.0)] * 10
    m = stats_with(*events).snapshot("v1", 300, 302)
    assert m.latency(50) == pytest.approx(2.0, rel=0.01)
    assert m.latency(95) == pytest.approx(400.0, rel=0.01)
    assert stats_with(*events).snapshot("v1", 300, 301).latency(100) == pytest.approx(2, rel=0.01)


def test_the_ring_forgets_seconds_older_than_the_window() -> None:
    stats = stats_with(ev(100.5, A), ev(109.5, A), ev(110.5, A), window=10)
    # Second 110 took second 100's slot; a window asking for 100 gets nothing from it.
    assert stats.snapshot("v1", 100, 101).requests == 0
    assert stats.snapshot("v1", 100, 111).requests == 2  # only the last 10 seconds: 101..110
    stats.record(ev(100.7, A))  # arrives late, older than the slot's second now
    assert stats.stale == 1
    assert sum(stats.totals()["v1"].status.values()) == 4  # totals still count it


def test_draining_addresses_keep_their_release() -> None:
    stats = stats_with()
    stats.observe_table(RouteTable((Upstream("b", "v2", B, 1),)))  # A left the table
    stats.record(ev(100.0, A))  # A's last in-flight request finishes
    assert stats.snapshot("v1", 100, 101).requests == 1
    stats.observe_table(RouteTable((Upstream("a2", "v3", A, 1),)))  # the port is reused
    stats.record(ev(101.0, A))
    assert stats.snapshot("v3", 100, 102).requests == 1


# (events, release) -> (requests, status, streams, p100 latency ms or None, service requests)
STREAM_CASES = [
    pytest.param(
        [ev(100.2, A, 101, ms=40_000.0)] * 30,
        "v1",
        (0, {}, 30, None, 0),
        id="thirty websockets of the old release close after the switch: no traffic",
    ),
    pytest.param(
        [ev(100.2, B, 200, ms=2.0)] * 5 + [ev(100.4, B, 101, ms=90_000.0)],
        "v2",
        (5, {"2xx": 5}, 1, 2.0, 5),
        id="a long-lived stream is not a 90 s request",
    ),
    pytest.param(
        [ev(100.2, B, 502, ms=1.0), ev(100.3, B, 101, ms=5.0)],
        "v2",
        (1, {"5xx": 1}, 1, 1.0, 1),
        id="a failed upgrade is a request like any other",
    ),
]


@pytest.mark.parametrize(("events", "release", "expected"), STREAM_CASES)
def test_upgraded_streams_are_counted_apart_from_requests(
    events: list[RequestEvent],
    release: str,
    expected: tuple[int, dict[str, int], int, float | None, int],
) -> None:
    stats = stats_with(*events)
    m = stats.snapshot(release, 100, 101)
    p100 = m.latency(100)
    got = (m.requests, dict(m.status), m.streams, p100, stats.requests(100, 101))
    assert got[:3] + got[4:] == expected[:3] + expected[4:]
    assert (p100 is None) == (expected[3] is None)
    if p100 is not None and expected[3] is not None:
        assert p100 == pytest.approx(expected[3], rel=0.01)
    assert stats.totals()[release].streams == expected[2]
    assert samples(stats)[("nonstop_streams_ended_total", (("release", release),))] == expected[2]


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window must be at least 1 second, got 0"):
        RequestStats(window=0)


def samples(stats: RequestStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    register_request_metrics(registry, stats)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_prometheus_exposition() -> None:
    stats = stats_with(
        ev(100.0, A, ms=3.0), ev(100.1, A, 404, ms=20.0), ev(100.2, None, 503, ms=0.1)
    )
    got = samples(stats)
    assert got[("nonstop_requests_total", (("code_class", "2xx"), ("release", "v1")))] == 1
    assert got[("nonstop_requests_total", (("code_class", "4xx"), ("release", "v1")))] == 1
    assert got[("nonstop_requests_total", (("code_class", "5xx"), ("release", UNROUTED)))] == 1
    assert got[("nonstop_request_proxy_errors_total", (("release", UNROUTED),))] == 1
    assert got[("nonstop_request_proxy_errors_total", (("release", "v1"),))] == 0
    bucket = "nonstop_request_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.005"), ("release", "v1")))] == 1
    assert got[(bucket, (("le", "0.025"), ("release", "v1")))] == 2
    assert got[(bucket, (("le", "+Inf"), ("release", "v1")))] == 2
    assert got[("nonstop_request_duration_seconds_count", (("release", "v1"),))] == 2
    assert got[("nonstop_request_duration_seconds_sum", (("release", "v1"),))] == pytest.approx(
        0.023
    )
