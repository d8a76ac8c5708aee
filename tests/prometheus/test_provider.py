"""PrometheusProvider and PrometheusSource against a real Prometheus scraping real sample apps
(fixtures in conftest.py), plus the pure helpers from tables."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from nonstop.analysis.checks import judge
from nonstop.config.schema import CheckConfig
from nonstop.drivers.metrics.prometheus_provider import (
    PrometheusProvider,
    PrometheusSource,
    _with_errors,
    fill,
    status_class,
    window_text,
)
from nonstop_testing import require_binary
from prometheus.conftest import SampleApp
from prometheus.promserver import PrometheusServer, free_port

ERROR_RATE = (
    '(sum(rate(http_requests_total{status=~"5..",release="{release}"}[{window}])) or vector(0))'
    ' / sum(rate(http_requests_total{release="{release}"}[{window}]))'
)
"""The documented error-rate template: ``or vector(0)`` because a release that never failed
has no 5xx series at all, and "no data" would make its check inconclusive."""
CHECK = CheckConfig(metric="query", query=ERROR_RATE, max=0.05)


@pytest.mark.parametrize(
    ("template", "release", "since", "until", "expected"),
    [
        ('x{release="{release}"}[{window}]', "v2", 100.0, 130.0, 'x{release="v2"}[30s]'),
        ("x[{window}]", "v2", 100.0, 100.4, "x[1s]"),  # never below 1s
        ("x[{window}]", "v2", 100.0, 109.6, "x[10s]"),  # whole seconds, rounded
        ('x{release="{release}"}', 'a"b\\c', 0.0, 1.0, 'x{release="a\\"b\\\\c"}'),
        ("histogram_quantile({quantile}, y)", "v", 0.0, 1.0, "histogram_quantile(0.99, y)"),
    ],
)
def test_fill_placeholders(
    template: str, release: str, since: float, until: float, expected: str
) -> None:
    assert fill(template, release, since, until) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [("200", "2xx"), ("503", "5xx"), ("404", "4xx"), ("", None), ("1xx", None)],
)
def test_status_class(code: str, expected: str | None) -> None:
    assert status_class(code) == expected


@pytest.mark.parametrize(
    ("status", "errors", "expected"),
    [
        # 100 requests, the error-rate query says 0.05: 5 errors, 95 others.
        ({"2xx": 100}, 5, {"2xx": 95, "5xx": 5}),
        # Others keep their proportions: 80 2xx + 20 4xx -> 90 non-errors as 72 + 18.
        ({"2xx": 80, "4xx": 20}, 10, {"2xx": 72, "4xx": 18, "5xx": 10}),
        # More errors than requests is clamped to every request.
        ({"2xx": 3, "5xx": 1}, 9, {"5xx": 4}),
        ({"5xx": 4}, 1, {"2xx": 3, "5xx": 1}),
    ],
)
def test_error_count_from_an_error_rate_query(
    status: dict[str, int], errors: int, expected: dict[str, int]
) -> None:
    assert _with_errors(status, errors) == expected


def test_window_text_is_whole_seconds() -> None:
    assert [window_text(0, d) for d in (0.2, 1.5, 59.4, 60.0)] == ["1s", "2s", "59s", "60s"]


# --- against the real server ----------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    since: float
    until: float
    sent: int = 40
    failed: int = 10


@pytest.fixture(scope="module")
def served(prometheus: PrometheusServer, apps: dict[str, SampleApp]) -> Served:
    """A 10 s window in which ``bad`` served 40 requests (10 failed) and ``good`` 20. It holds
    several scrapes before and after the requests, so ``increase()``, which extrapolates from
    the first and last sample to the window's edges, is within about 10% of the truth."""
    since = time.time()
    time.sleep(4)
    assert apps["bad"].hit(40) == 10  # request n fails when floor(n/4) grows: 1 in 4
    assert apps["good"].hit(20) == 0
    prometheus.wait_value('sum(http_requests_total{release="bad"})', 44)
    prometheus.wait_value('sum(http_requests_total{release="good"})', 21)
    time.sleep(max(0.0, since + 10 - time.time()))
    return Served(since, time.time())


async def test_measure_matches_what_the_apps_served(
    prometheus: PrometheusServer, served: Served
) -> None:
    since, until, sent, failed = served.since, served.until, served.sent, served.failed
    provider = PrometheusProvider(prometheus.url)
    try:
        bad, why_bad = await provider.measure_why("bad", since, until)
        good = await provider.measure("good", since, until)
    finally:
        await provider.close()
    assert why_bad is None
    # increase() extrapolates to the window's edges: counts are close, the ratio is exact-ish.
    assert sent * 0.85 <= bad.requests <= sent * 1.3, bad
    assert bad.error_rate == pytest.approx(failed / sent, abs=0.03), bad
    assert 20 * 0.85 <= good.requests <= 20 * 1.3, good
    assert good.errors == 0
    # The sample app answers "/" in about a millisecond: histogram_quantile interpolates inside
    # the first buckets (5 ms, 10 ms, ...). Bounded loosely: a loaded machine may be slower.
    assert set(bad.latency_ms) == {50.0, 90.0, 95.0, 99.0}
    ordered = [bad.latency_ms[p] for p in (50.0, 90.0, 95.0, 99.0)]
    assert ordered == sorted(ordered)
    assert 0 < ordered[0] <= ordered[-1] <= 250.0


async def test_query_check_value_and_verdict(prometheus: PrometheusServer, served: Served) -> None:
    since, until = served.since, served.until
    provider = PrometheusProvider(prometheus.url)
    try:
        bad = await provider.query(ERROR_RATE, "bad", since, until)
        good = await provider.query(ERROR_RATE, "good", since, until)
    finally:
        await provider.close()
    assert bad.error is None
    assert good.error is None
    assert bad.value == pytest.approx(0.25, abs=0.03)
    assert good.value == 0
    assert judge(CHECK, bad).outcome == "fail"
    assert judge(CHECK, good).outcome == "pass"


async def test_user_error_rate_and_latency_queries_replace_the_defaults(
    prometheus: PrometheusServer, served: Served
) -> None:
    since, until = served.since, served.until
    provider = PrometheusProvider(
        prometheus.url,
        error_rate_query=ERROR_RATE,
        latency_query='max(http_request_duration_seconds_sum{release="{release}"}) * 0 + 0.25',
    )
    try:
        bad = await provider.measure("bad", since, until)
    finally:
        await provider.close()
    assert bad.error_rate == pytest.approx(0.25, abs=0.03)
    assert bad.latency_ms == {99.0: 250.0}  # no {quantile}: taken as the p99


async def test_bad_promql_is_inconclusive_with_prometheus_message(
    prometheus: PrometheusServer, apps: dict[str, SampleApp]
) -> None:
    now = time.time()
    provider = PrometheusProvider(prometheus.url, error_rate_query="sum(rate(oops[{window}])")
    try:
        value = await provider.query("sum(rate(x[{window}]) /", "bad", now - 10, now)
        measurement, why = await provider.measure_why("bad", now - 10, now)
    finally:
        await provider.close()
    assert value.value is None
    assert value.error is not None
    assert value.error.startswith("Prometheus rejected sum(rate(x[10s]) /: ")
    assert "parse error" in value.error  # Prometheus's own words
    verdict = judge(CHECK, value)
    assert verdict.outcome == "inconclusive"
    assert "parse error" in verdict.reason
    assert measurement.requests == 0
    assert why is not None
    assert "parse error" in why


async def test_empty_answers_are_inconclusive_not_zero(
    prometheus: PrometheusServer, apps: dict[str, SampleApp]
) -> None:
    now = time.time()
    provider = PrometheusProvider(prometheus.url)
    try:
        value = await provider.query(
            ERROR_RATE.replace(" or vector(0)", ""), "nosuch", now - 10, now
        )
        measurement, why = await provider.measure_why("nosuch", now - 10, now)
        many = await provider.query(
            'http_requests_total{release="{release}"}', "bad", now - 10, now
        )
    finally:
        await provider.close()
    assert value.value is None
    assert value.error is not None
    assert value.error.startswith("Prometheus returned no data for ")
    assert judge(CHECK, value).outcome == "inconclusive"
    assert measurement.requests == 0
    assert why == (
        "Prometheus has no http_requests_total series for release nosuch over the last 10s "
        "(is it scraped?)"
    )
    assert many.error is not None
    assert "2 series" in many.error
    assert "sum(" in many.error


async def test_nothing_listening_is_cannot_reach() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    provider = PrometheusProvider(url, timeout=1.0)
    now = time.time()
    try:
        value = await provider.query(ERROR_RATE, "v2", now - 10, now)
        measurement, why = await provider.measure_why("v2", now - 10, now)
    finally:
        await provider.close()
    assert value.error is not None
    assert value.error.startswith(f"cannot reach Prometheus at {url}")
    assert judge(CHECK, value).outcome == "inconclusive"
    assert measurement.requests == 0
    assert why is not None
    assert why.startswith(f"cannot reach Prometheus at {url}")


async def test_source_answers_from_the_poller_and_reports_a_stopped_prometheus(
    tmp_path: Path,
) -> None:
    """PrometheusSource: nothing before the first poll, Prometheus's numbers after it, and one
    event (not one per poll) when Prometheus goes away."""
    binary = require_binary("prometheus")
    server = PrometheusServer(binary, tmp_path / "prom")
    server.start()
    errors: list[str] = []
    source = PrometheusSource(PrometheusProvider(server.url, timeout=1.0), on_error=errors.append)
    try:
        since = time.time() - 5
        before = source.snapshot("v9", since, time.time())
        assert (before.requests, before.end) == (0, since)
        pending = source.query_value("vector(0.5)", "v9", since, time.time())
        assert pending.error == "no answer from Prometheus yet"
        await source.poll()
        answered = source.query_value("vector(0.5)", "v9", since, time.time())
        assert (answered.value, answered.error) == (0.5, None)
        assert source.snapshot("v9", since, time.time()).requests == 0
        assert errors == [
            "v9: Prometheus has no http_requests_total series for release v9 over the last 5s "
            "(is it scraped?)"
        ]
        server.stop()
        await source.poll()
        await source.poll()
        gone = source.query_value("vector(0.5)", "v9", since, time.time())
        assert gone.value is None
        assert gone.error is not None
        assert gone.error.startswith("cannot reach Prometheus")
        assert judge(CHECK, gone).outcome == "inconclusive"
        assert len(errors) == 3  # the measurement's and the query's, once each
        assert all("cannot reach Prometheus" in e for e in errors[1:])
    finally:
        server.stop()
        await source.provider.close()


async def test_measure_counts_the_histogram_buckets(
    prometheus: PrometheusServer, served: Served
) -> None:
    """The bucket counts come as ``latency_le`` (ms, and inf): every bucket is cumulative, so
    the counts never fall as the bound grows, and ``inf`` holds about every request."""
    provider = PrometheusProvider(prometheus.url)
    try:
        bad = await provider.measure("bad", served.since, served.until)
    finally:
        await provider.close()
    assert 500.0 in bad.latency_le
    assert math.inf in bad.latency_le
    counts = [bad.latency_le[b] for b in sorted(bad.latency_le)]
    assert counts == sorted(counts)
    assert served.sent * 0.85 <= bad.latency_le[math.inf] <= served.sent * 1.3
    slow, total = bad.slower_than(500.0) or (None, None)
    assert total == bad.latency_le[math.inf]
    assert slow is not None
    assert 0 <= slow <= 2  # "/" answers in about a millisecond
