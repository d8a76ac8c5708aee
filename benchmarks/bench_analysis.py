"""Time to roll back a bad canary: the sequential test against a fixed-window threshold rule.

A pure simulation (no router, no processes): 200 requests/s, canary step 5%, the canary fails 5%
of its requests, the stable release 0% (and, as a second scenario, 0.1%). Per-second counts are
exact binomial draws from a seeded generator (nonstop.analysis.simulate), and both rules judge
the *same* simulated traffic of each seed:

- sequential: ``nonstop.analysis.sequential.observe`` fed cumulative counts every ``--cadence``
  seconds (default 1), failing when the e-value reaches 1/alpha = 100;
- fixed window (the baseline, how Flagger and Argo Rollouts are commonly set up): 1-minute
  windows, an error-rate check ``max 1%`` (min_samples 50), roll back on the first failing window.

Reported per rule over all seeds: time from the first canary request to the rollback decision,
and failed user requests (canary errors) until then; then the ratios baseline / sequential.
A third scenario runs identical releases (0.5% errors on both) for 10 minutes and counts false
rollbacks of each rule.

    .venv/bin/python benchmarks/bench_analysis.py [--seeds 2000] [--cadence 1]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass

from nonstop.analysis.checks import judge
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.sequential import Counts, new_sequential, observe
from nonstop.analysis.simulate import Traffic
from nonstop.config.schema import CheckConfig

WINDOW = 60  # seconds, the fixed-window rule's interval
HORIZON = 600  # seconds simulated per seed at most
FIXED_CHECK = CheckConfig(metric="error_rate", max=0.01, min_samples=50, interval=WINDOW)


@dataclass
class Outcome:
    seconds: float | None  # None: never rolled back within the horizon
    failed: int  # canary errors served until the decision (or the horizon)


def simulate(traffic: Traffic, seed: int, cadence: int) -> tuple[Outcome, Outcome]:
    """One seed: per-second traffic, judged by both rules. Returns (sequential, fixed)."""
    rng = random.Random(seed)
    run, total = new_sequential(), Counts()
    window_base, window_start = Counts(), 0
    sequential: Outcome | None = None
    fixed: Outcome | None = None
    for second in range(1, HORIZON + 1):
        total = total + traffic.interval(rng, 1.0)
        if sequential is None and second % cadence == 0:
            run, verdict = observe(run, total)
            if verdict.outcome == "fail":
                sequential = Outcome(second, total.canary_errors)
        if fixed is None and second % WINDOW == 0:
            verdict = judge(FIXED_CHECK, _measurement(total - window_base, window_start, second))
            window_base, window_start = total, second
            if verdict.outcome == "fail":
                fixed = Outcome(second, total.canary_errors)
        if sequential is not None and fixed is not None:
            break
    return (
        sequential or Outcome(None, total.canary_errors),
        fixed or Outcome(None, total.canary_errors),
    )


def _measurement(c: Counts, start: int, end: int) -> Measurement:
    status = {"2xx": c.canary_requests - c.canary_errors, "5xx": c.canary_errors}
    return Measurement("v2", float(start), float(end), c.canary_requests, status)


def describe(outcomes: list[Outcome]) -> dict[str, float]:
    caught = [o for o in outcomes if o.seconds is not None]
    seconds = [o.seconds for o in caught if o.seconds is not None]
    failed = [o.failed for o in caught]
    if not caught:
        return {"caught": 0.0}
    return {
        "caught": len(caught) / len(outcomes),
        "t_mean": statistics.fmean(seconds),
        "t_median": statistics.median(seconds),
        "t_p95": _p95(seconds),
        "f_mean": statistics.fmean(failed),
        "f_median": statistics.median(failed),
        "f_p95": _p95([float(f) for f in failed]),
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def bad_canary(name: str, traffic: Traffic, seeds: int, cadence: int) -> None:
    pairs = [simulate(traffic, seed, cadence) for seed in range(seeds)]
    seq = describe([p[0] for p in pairs])
    fix = describe([p[1] for p in pairs])
    print(f"\n## {name}: {seeds} seeds, sequential looks every {cadence} s\n")
    print("| rule | rolled back | time mean / median / p95 (s) | failed requests mean/median/p95 |")
    print("|---|---|---|---|")
    for label, d in (("sequential (e-value >= 100)", seq), ("fixed 1-min window, max 1%", fix)):
        print(
            f"| {label} | {d['caught']:.1%} | {d['t_mean']:.1f} / {d['t_median']:.0f} / "
            f"{d['t_p95']:.0f} | {d['f_mean']:.1f} / {d['f_median']:.0f} / {d['f_p95']:.0f} |"
        )
    per_seed = [
        f.failed / s.failed
        for s, f in pairs
        if s.seconds is not None and f.seconds is not None and s.failed
    ]
    print(
        f"\nratio fixed / sequential: failed requests {fix['f_mean'] / seq['f_mean']:.1f}x "
        f"(ratio of means; median per seed {statistics.median(per_seed):.1f}x), "
        f"time to rollback {fix['t_mean'] / seq['t_mean']:.1f}x"
    )


def identical(seeds: int, cadence: int) -> None:
    traffic = Traffic(canary_error_rate=0.005, stable_error_rate=0.005, share=0.05)
    pairs = [simulate(traffic, seed, cadence) for seed in range(seeds)]
    seq = sum(p[0].seconds is not None for p in pairs)
    fix = sum(p[1].seconds is not None for p in pairs)
    print(f"\n## identical releases (0.5% errors on both), {HORIZON // 60} min, {seeds} seeds\n")
    print(f"false rollbacks: sequential {seq} ({seq / seeds:.2%}), ", end="")
    print(f"fixed window {fix} ({fix / seeds:.2%})")


def cost(seconds: int = 100_000) -> None:
    traffic = Traffic(canary_error_rate=0.01, stable_error_rate=0.01, share=0.05)
    rng, run, total = random.Random(0), new_sequential(), Counts()
    feed = []
    for _ in range(seconds):
        total = total + traffic.interval(rng, 1.0)
        feed.append(total)
    started = time.perf_counter()
    for cumulative in feed:
        run, _ = observe(run, cumulative)
    per_call = (time.perf_counter() - started) / seconds
    print(f"\n## cost\n\nobserve(): {per_call * 1e6:.1f} µs per call ({seconds} calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--cadence", type=int, default=1, help="seconds between sequential looks")
    args = parser.parse_args()
    with open("/proc/cpuinfo") as cpuinfo:
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
        ]
    cpu = models[0] if models else platform.processor()
    print("# bench_analysis (simulation)\n")
    print(f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    started = time.perf_counter()
    bad_canary(
        "canary 5% errors vs stable 0%", Traffic(0.05, 0.0, share=0.05), args.seeds, args.cadence
    )
    bad_canary(
        "canary 5% errors vs stable 0.1%",
        Traffic(0.05, 0.001, share=0.05),
        args.seeds,
        args.cadence,
    )
    identical(args.seeds, args.cadence)
    cost()
    print(f"\nwall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
