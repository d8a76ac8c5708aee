"""Guarded flag rollouts judged on the flag's users: how soon a bad flag is switched off, and
how often a good one is, by `nonstop.flags.rollout.judge` against the service-wide rule it
replaces (`decide` on the service's error rate, decision 0262).

A pure simulation (no agent, no SDK): 100 outcomes per second reported for the flag, a share
``--share`` of them (default 10%, the first step) from flagged users. Each second is one tick:
the counts of that second are exact binomial draws from a seeded generator
(`nonstop.analysis.simulate.binomial`), the cumulative totals go to ``judge`` (the step lasts
longer than the simulation, so only a rejection ends a run), and the service-wide rule sees
the same outcomes as the router would see its requests (all of them, flagged or not) with
``--max-error-rate 0.05 --min-requests 20``.

Scenarios (``--runs`` seeds each, ``--horizon`` seconds at most):

- bad flag: flagged users fail 10%, the others 0%; then 10% vs 1%;
- good flag: both groups fail 1%; then both 5%.

Reported: runs switched off, and for the bad flags the flagged outcomes and flagged errors
served until the switch (mean / median / p95); for the good flags, false switch-offs.

    .venv/bin/python benchmarks/bench_flag_guard.py [--runs 1000] [--horizon 600] [--share 0.1]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass

from nonstop.analysis.sequential import Counts
from nonstop.analysis.simulate import binomial
from nonstop.flags.rollout import Plan, decide, judge, start_test

RATE = 100  # outcomes per second


@dataclass
class Run:
    seconds: int | None  # None: never switched off within the horizon
    flagged: int  # flagged outcomes until the switch (or the horizon)
    errors: int  # flagged errors until then


def simulate(
    seed: int, share: float, flagged_rate: float, other_rate: float, horizon: int
) -> tuple[Run, Run]:
    """One seed judged by both rules: (flag's users vs the others, service-wide)."""
    rng = random.Random(seed)
    plan = Plan((10, 100), 10.0 * horizon, 0.05, 20, 0, 0.0, test=start_test(Counts()))
    service = Plan((10, 100), 10.0 * horizon, 0.05, 20, 0, 0.0)
    total = Counts()
    guard: Run | None = None
    wide: Run | None = None
    for second in range(1, horizon + 1):
        flagged = binomial(rng, RATE, share)
        others = RATE - flagged
        total = total + Counts(
            flagged,
            binomial(rng, flagged, flagged_rate),
            others,
            binomial(rng, others, other_rate),
        )
        if guard is None:
            decision = judge(plan, second, total, 0, 0)
            plan = decision.plan
            if decision.action == "abort":
                guard = Run(second, total.canary_requests, total.canary_errors)
        if wide is None:
            errors = total.canary_errors + total.stable_errors
            requests = total.canary_requests + total.stable_requests
            if decide(service, second, errors, requests).action == "abort":
                wide = Run(second, total.canary_requests, total.canary_errors)
        if guard is not None and wide is not None:
            break
    never = Run(None, total.canary_requests, total.canary_errors)
    return guard or never, wide or never


def summary(values: list[int]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{statistics.fmean(values):.1f} / {statistics.median(values):g} / {p95}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--horizon", type=int, default=600, help="seconds simulated per run")
    parser.add_argument("--share", type=float, default=0.1, help="flagged share of outcomes")
    args = parser.parse_args()
    print(f"# {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}")
    print(
        f"# {args.runs} runs per scenario, {RATE} outcomes/s, flagged share {args.share:.0%}, "
        f"up to {args.horizon} s"
    )
    scenarios = (
        ("bad flag: flagged 10% vs others 0%", 0.10, 0.0),
        ("bad flag: flagged 10% vs others 1%", 0.10, 0.01),
        ("good flag: both 1%", 0.01, 0.01),
        ("good flag: both 5%", 0.05, 0.05),
    )
    print("| scenario | rule | switched off | flagged outcomes until then | flagged errors |")
    print("|---|---|---|---|---|")
    started = time.perf_counter()
    for title, flagged_rate, other_rate in scenarios:
        results = [
            simulate(seed, args.share, flagged_rate, other_rate, args.horizon)
            for seed in range(args.runs)
        ]
        for i, rule in enumerate(("flag's users vs others", "service-wide 5%")):
            runs = [r[i] for r in results]
            off = [r for r in runs if r.seconds is not None]
            share = f"{len(off)} of {len(runs)} ({len(off) / len(runs):.1%})"
            name = title if i == 0 else ""
            if title.startswith("bad"):
                flagged = summary([r.flagged for r in off])
                errors = summary([r.errors for r in off])
                print(f"| {name} | {rule} | {share} | {flagged} | {errors} |")
            else:
                print(f"| {name} | {rule} | {share} | - | - |")
    print(f"# wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
