"""What a live rollout page costs the agent: its charts, per tick, against one analysis window.

A 15-minute rollout at ``--rps`` requests/s split between two releases (25% canary) is recorded
into a RequestStats ring, as the router's stream would (latencies 1-40 ms, 1% errors). Then:

- cold: the rollout page's first load, every second of both releases as chart points
  (``views.chart_series``: two percentiles of each second's histogram);
- warm: what each server-sent-events tick of an open page costs once the settled seconds are
  cached (the clock moved one second on);
- baseline, same run: one ``snapshot()`` of the stable release over the whole 15 minutes, the
  measurement an analysis check or `status` takes;
- the page load again with the percentiles from HdrHistogram's own
  ``get_percentile_to_value_dict`` (which walks every bucket), as before ``percentiles_us``.

Reported: medians of ``--repeat`` runs (ms), ratios against the baseline, and the JSON size of
the chart data the page receives on load.

    .venv/bin/python benchmarks/bench_dashboard.py [--rps 200] [--seconds 900] [--repeat 9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from types import SimpleNamespace
from typing import Any, cast

from nonstop.agent.dashboard.views import ChartCache, chart_series
from nonstop.drivers.metrics import RequestStats, request_stats
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream

STABLE, CANARY = "127.0.0.1:9001", "127.0.0.1:9002"


def recorded(rps: int, seconds: int, start: float) -> RequestStats:
    stats = RequestStats(window=seconds + 60, clock=lambda: start)
    stats.observe_table(
        RouteTable((Upstream("v1-1", "v1", STABLE, 3), Upstream("v2-1", "v2", CANARY, 1)))
    )
    rng = random.Random(7)
    for second in range(seconds):
        for n in range(rps):
            address = CANARY if n % 4 == 0 else STABLE
            status = 500 if rng.random() < 0.01 else 200
            event = RequestEvent(start + second + n / rps, address, status, rng.uniform(1, 40))
            stats.record(event)
    return stats


def timed(work: Any, repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        runs.append((time.perf_counter() - began) * 1000.0)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=900)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    start = 1_000_000.0
    began = time.perf_counter()
    stats = recorded(args.rps, args.seconds, start)
    print(f"recorded {args.rps * args.seconds:,} requests in {time.perf_counter() - began:.1f}s")
    row = SimpleNamespace(
        stable="v1", candidate="v2", started_at=start, finished_at=None, running=True
    )
    end = start + args.seconds
    now = [end]

    def cold() -> dict[str, Any]:
        cache = ChartCache(stats, clock=lambda: now[0])
        return chart_series(cache, cast(Any, row), now[0])

    cache = ChartCache(stats, clock=lambda: now[0])
    chart_series(cache, cast(Any, row), now[0])

    def warm() -> None:
        now[0] += 1.0
        chart_series(cache, cast(Any, row), now[0])

    results = {
        "cold (page load)": timed(cold, args.repeat),
        "warm (one SSE tick)": timed(warm, args.repeat * 5),
        "baseline: one 15-min snapshot": timed(
            lambda: stats.snapshot("v1", start, end), args.repeat
        ),
    }
    fast = request_stats.percentiles_us
    request_stats.percentiles_us = library_percentiles
    try:
        results["cold, library percentiles"] = timed(cold, max(3, args.repeat // 3))
    finally:
        request_stats.percentiles_us = fast
    report(results, len(json.dumps(cold(), separators=(",", ":"))))


def library_percentiles(hist: Any, wanted: tuple[float, ...]) -> list[int]:
    values = hist.get_percentile_to_value_dict(list(wanted))
    return [int(values[p]) for p in wanted]


def report(results: dict[str, list[float]], size: int) -> None:
    base = statistics.median(results["baseline: one 15-min snapshot"])
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, load {os.getloadavg()}")
    print(f"{'what':34} {'median ms':>10} {'min':>8} {'max':>8} {'x baseline':>11}")
    for name, runs in results.items():
        median = statistics.median(runs)
        print(f"{name:34} {median:10.2f} {min(runs):8.2f} {max(runs):8.2f} {median / base:11.2f}")
    print(f"chart data on page load: {size / 1024:.0f} KiB of JSON")


if __name__ == "__main__":
    main()
