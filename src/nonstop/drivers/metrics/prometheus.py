"""Prometheus exposition of RequestStats, for the agent's /metrics.

    nonstop_requests_total{release, code_class}              counter
    nonstop_request_proxy_errors_total{release}              counter (router's own 502/503/504)
    nonstop_request_duration_seconds{release}                histogram
    nonstop_streams_ended_total{release}                     counter (upgraded connections, 101)

Values are read from the stats at scrape time (a custom collector), so recording an event costs
nothing extra for Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from nonstop.drivers.metrics.request_stats import RequestStats


class RequestStatsCollector(Collector):
    def __init__(self, stats: RequestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "nonstop_requests",
            "Requests the router finished, by release and status class.",
            labels=["release", "code_class"],
        )
        proxy_errors = CounterMetricFamily(
            "nonstop_request_proxy_errors",
            "Responses the router produced itself because no upstream answered.",
            labels=["release"],
        )
        durations = HistogramMetricFamily(
            "nonstop_request_duration_seconds",
            "Time from the request's arrival at the router to the end of its response.",
            labels=["release"],
        )
        streams = CounterMetricFamily(
            "nonstop_streams_ended",
            "Upgraded connections (WebSockets) that ended; not counted as requests.",
            labels=["release"],
        )
        bounds = self.stats.buckets
        for release, totals in sorted(self.stats.totals().items()):
            for code_class, count in sorted(totals.status.items()):
                requests.add_metric([release, code_class], count)
            proxy_errors.add_metric([release], totals.proxy_errors)
            streams.add_metric([release], totals.streams)
            cumulative, buckets = 0, []
            for bound, count in zip((*map(_le, bounds), "+Inf"), totals.buckets, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            durations.add_metric([release], buckets, sum_value=totals.duration_sum)
        yield requests
        yield proxy_errors
        yield durations
        yield streams


def _le(bound: float) -> str:
    return repr(float(bound))


def register_request_metrics(
    registry: CollectorRegistry, stats: RequestStats
) -> RequestStatsCollector:
    """Expose ``stats`` on ``registry``; returns the collector (``registry.unregister`` it to
    stop)."""
    collector = RequestStatsCollector(stats)
    registry.register(collector)
    return collector
