"""Time to roll back a bad canary: the sequential test against a fixed-window threshold rule.

A pure simulation (no router, no processes): 200 requests/s, canary step 5%, the canary fails 5%
of its requests, the stable release 0% (and, as a second scenario, 0.1%). Per-second counts are
exact binomial draws from a seeded generator (nonstop.analysis.simulate), and both rules judge
the *same* simulated traffic of each seed:

- sequential: ``nonstop.analysis.sequential.observe`` fed cumulative counts every ``--cadence``
  seconds (default 1), failing when the e-value reaches 1/alpha = 100;
- fixed window (the baseline, how Flagger and Argo Rollouts are commonly set up): 1-minute
  windows, an error-rate check ``max 1%`` (min_samples 50) comparing the raw rate
  (``confidence = 0``), roll back on the first failing window;
- the same fixed window judged as nonstop's checks now are by default: it fails only when the
  rate is above 1% with 95% confidence (exact one-sided bound), and a window that cannot tell
  pools with the next ones.

Reported per rule over all seeds: time from the first canary request to the rollback decision,
and failed user requests (canary errors) until then; then the ratios baseline / sequential.
A third scenario runs identical releases (0.5% errors on both) for 10 minutes and counts false
rollbacks of each rule.

With ``--schedules N`` it also walks the presets' whole schedules N times (2,000 for
``quick``) at 200 requests/s, as ``tests/analysis/test_robust_simulation.py`` does: one window
per check interval into the step's analysis and the sequential test, ``conclude`` when the pause
is over, an undecided step measuring on as long again and then counted as paused (and promoted).
It reports rollbacks (by the threshold or the sequential test), their times, and pauses.

    .venv/bin/python benchmarks/bench_analysis.py [--seeds 2000] [--cadence 1] [--schedules 0]
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

from nonstop.analysis.checks import AnalysisRun, conclude, judge, new_run, step
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.presets import preset_steps
from nonstop.analysis.sequential import Counts, new_sequential, observe, update
from nonstop.analysis.simulate import Traffic, binomial
from nonstop.config.schema import CheckConfig

WINDOW = 60  # seconds, the fixed-window rule's interval
HORIZON = 600  # seconds simulated per seed at most
FIXED_CHECK = CheckConfig(
    metric="error_rate", max=0.01, min_samples=50, interval=WINDOW, confidence=0
)
BOUND_CHECK = CheckConfig(metric="error_rate", max=0.01, min_samples=50, interval=WINDOW)
RULES = ("sequential (e-value >= 100)", "fixed 1-min window, max 1%", "same, 95% bound, pooled")


@dataclass
class Outcome:
    seconds: float | None  # None: never rolled back within the horizon
    failed: int  # canary errors served until the decision (or the horizon)


def simulate(traffic: Traffic, seed: int, cadence: int) -> tuple[Outcome, Outcome, Outcome]:
    """One seed: per-second traffic, judged by every rule. Returns (sequential, fixed, bound)."""
    rng = random.Random(seed)
    run, total = new_sequential(), Counts()
    window_base, window_start = Counts(), 0
    bound_run = new_run([BOUND_CHECK])
    sequential: Outcome | None = None
    fixed: Outcome | None = None
    bound: Outcome | None = None
    for second in range(1, HORIZON + 1):
        total = total + traffic.interval(rng, 1.0)
        if sequential is None and second % cadence == 0:
            run, verdict = observe(run, total)
            if verdict.outcome == "fail":
                sequential = Outcome(second, total.canary_errors)
        if second % WINDOW == 0:
            window = _measurement(total - window_base, window_start, second)
            window_base, window_start = total, second
            if fixed is None and judge(FIXED_CHECK, window).outcome == "fail":
                fixed = Outcome(second, total.canary_errors)
            bound_run, _ = step(bound_run, BOUND_CHECK, window)
            if bound is None and bound_run.phase == "failed":
                bound = Outcome(second, total.canary_errors)
        if sequential is not None and fixed is not None and bound is not None:
            break
    never = Outcome(None, total.canary_errors)
    return sequential or never, fixed or never, bound or never


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
    rules = [seq, fix, describe([p[2] for p in pairs])]
    print(f"\n## {name}: {seeds} seeds, sequential looks every {cadence} s\n")
    print("| rule | rolled back | time mean / median / p95 (s) | failed requests mean/median/p95 |")
    print("|---|---|---|---|")
    for label, d in zip(RULES, rules, strict=True):
        print(
            f"| {label} | {d['caught']:.1%} | {d['t_mean']:.1f} / {d['t_median']:.0f} / "
            f"{d['t_p95']:.0f} | {d['f_mean']:.1f} / {d['f_median']:.0f} / {d['f_p95']:.0f} |"
        )
    per_seed = [
        f.failed / s.failed
        for s, f, _ in pairs
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
    print(f"\n## identical releases (0.5% errors on both), {HORIZON // 60} min, {seeds} seeds\n")
    counts = [sum(p[i].seconds is not None for p in pairs) for i in range(len(RULES))]
    print(
        "false rollbacks: "
        + ", ".join(f"{r} {n} ({n / seeds:.2%})" for r, n in zip(RULES, counts, strict=True))
    )


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
    windows = [
        _measurement(feed[i + 59] - feed[i - 1], i, i + 60) for i in range(1, seconds - 60, 60)
    ]
    for label, check in (("raw", FIXED_CHECK), ("95% bound", BOUND_CHECK)):
        started = time.perf_counter()
        for window in windows:
            judge(check, window)
        per_call = (time.perf_counter() - started) / len(windows)
        print(f"judge() {label}: {per_call * 1e6:.1f} µs per 1-min window ({len(windows)} calls)")


def _end_of_step(run: AnalysisRun, elapsed: float, pause: float, interval: float) -> str:
    """What the planner does once a step's pause is over: ``next``, ``fail`` (the step's
    whole data, compared with stable), ``wait`` (measure on) or ``paused`` (a person)."""
    if elapsed < pause:
        return "wait"
    outcome = conclude(run).outcome
    if outcome == "pass":
        return "next"
    if outcome == "fail":
        return "fail"
    if elapsed >= 2 * pause and elapsed >= pause + 6 * interval:
        return "paused"
    return "wait"


def schedule(
    preset: str, canary: float, stable: float, seed: int, compare: bool = True
) -> tuple[str, float, int]:
    """One walk of a preset's steps: (``completed``, ``sequential``, ``error_rate`` (windows)
    or ``end of step``; seconds; steps that paused for a person). ``compare=False`` is the
    behaviour before the comparison with stable: no baseline reaches the checks."""
    rng, sequential = random.Random(seed), new_sequential()
    now, pauses = 0.0, 0
    for planned in preset_steps(preset)[:-1]:
        assert planned.weight is not None
        assert isinstance(planned.pause, float)
        checks = [c for c in planned.analysis or () if c.metric == "error_rate"]
        interval = min(c.interval for c in checks)
        traffic = Traffic(canary, stable, share=planned.weight / 100, random_routing=False)
        run, elapsed = new_run(checks), 0.0
        while True:
            counts = traffic.interval(rng, interval)
            window = _measurement(counts, int(now), int(now + interval))
            baseline = _stable(counts, int(now), int(now + interval)) if compare else None
            now, elapsed = now + interval, elapsed + interval
            sequential = update(sequential, counts)
            if sequential.e_value >= sequential.threshold:
                return "sequential", now, pauses
            for check in checks:
                run, _ = step(run, check, window, baseline=baseline)
            if run.phase == "failed":
                return "error_rate", now, pauses
            end = _end_of_step(run, elapsed, planned.pause, interval)
            if end == "fail":
                return "end of step", now, pauses
            if end in ("next", "paused"):
                pauses += end == "paused"
                break
    return "completed", now, pauses


def _stable(c: Counts, start: int, end: int) -> Measurement:
    status = {"2xx": c.stable_requests - c.stable_errors, "5xx": c.stable_errors}
    return Measurement("v1", float(start), float(end), c.stable_requests, status)


Z99 = 2.3263478740408408  # the standard normal's 99th percentile


@dataclass(frozen=True)
class Latency:
    """Lognormal latencies (``sigma`` in log space): the stable release's p99 is
    ``stable_p99`` ms, the canary's every request takes ``slower`` times as long (the same
    shape, its p99 ``slower`` times the stable's)."""

    stable_p99: float
    slower: float = 1.0
    sigma: float = 0.5

    def slow_share(self, bound_ms: float, factor: float) -> float:
        """P(latency > bound_ms) for a release ``factor`` times the stable's."""
        mu = math.log(self.stable_p99) - Z99 * self.sigma
        z = (math.log(bound_ms / factor) - mu) / self.sigma
        return 0.5 * math.erfc(z / math.sqrt(2))


def _latency_window(
    release: str, n: int, slow: int, bound: float, start: float, end: float, counted: bool
) -> Measurement:
    """A window of ``n`` requests, ``slow`` of them slower than ``bound``. Its p99 is above
    ``bound`` exactly when more than ``n - ceil(0.99 n)`` are (the rank HdrHistogram reports),
    so the raw comparison is decided by the same count; the value shown is nominal."""
    over = slow >= n - math.ceil(0.99 * n) + 1
    latency = {99.0: bound * (1.05 if over else 0.95)} if n else {}
    le = {bound: n - slow, math.inf: n} if counted else {}
    return Measurement(release, start, end, n, {"2xx": n}, 0, latency, True, le)


def latency_schedule(
    preset: str, world: Latency, seed: int, counted: bool = True
) -> tuple[str, float, int]:
    """One walk of a preset's latency checks: judged from counts with the preset's confidence
    and compared with stable (``counted``), or the p99 as measured (before)."""
    rng = random.Random(seed)
    now, pauses = 0.0, 0
    for planned in preset_steps(preset)[:-1]:
        assert planned.weight is not None
        assert isinstance(planned.pause, float)
        checks = [c for c in planned.analysis or () if c.metric == "latency"]
        if not counted:
            checks = [c.model_copy(update={"confidence": 0.0}) for c in checks]
        interval = min(c.interval for c in checks)
        n = round(200 * interval)
        n_c = round(n * planned.weight / 100)
        run, elapsed = new_run(checks), 0.0
        while True:
            start, end = now, now + interval
            now, elapsed = end, elapsed + interval
            for check in checks:
                assert check.max is not None
                s_c = world.slow_share(check.max, world.slower)
                s_s = world.slow_share(check.max, 1.0)
                slow_c, slow_s = binomial(rng, n_c, s_c), binomial(rng, n - n_c, s_s)
                canary = _latency_window("v2", n_c, slow_c, check.max, start, end, counted)
                stable = _latency_window("v1", n - n_c, slow_s, check.max, start, end, counted)
                run, _ = step(run, check, canary, baseline=stable if counted else None)
            if run.phase == "failed":
                return "latency", now, pauses
            outcome = _end_of_step(run, elapsed, planned.pause, interval)
            if outcome == "fail":
                return "end of step", now, pauses
            if outcome in ("next", "paused"):
                pauses += outcome == "paused"
                break
    return "completed", now, pauses


def _summary(results: list[tuple[str, float, int]]) -> tuple[str, str, str, str]:
    count = len(results)
    rolled = sorted(t for how, t, _ in results if how != "completed")
    kinds: dict[str, int] = {}
    for how, _, _ in results:
        if how != "completed":
            kinds[how] = kinds.get(how, 0) + 1
    by = ", ".join(f"{n} {how}" for how, n in sorted(kinds.items())) or "-"
    times = f"{statistics.median(rolled):.0f} / {rolled[-1]:.0f}" if rolled else "-"
    paused = sum(p > 0 for _, _, p in results)
    return f"{len(rolled)}/{count}", by, times, f"{paused}/{count}"


def schedules(runs: int) -> None:
    print(f"\n## preset schedules at 200 requests/s ({runs} runs, quick {runs * 20 // 3})\n")
    print("Each row twice on the same seeds: *before* (no comparison with stable) and *now*.\n")
    print(
        "| preset | canary / stable errors | rule | rolled back | by | rollback time median / "
        "max (s) | paused for a person |"
    )
    print("|---|---|---|---|---|---|---|")
    cases = [
        ("progressive", 0.0002, 0.0002),
        ("progressive", 0.0005, 0.0005),
        ("progressive", 0.001, 0.001),
        ("quick", 0.0002, 0.0002),
        ("quick", 0.001, 0.001),
        ("progressive", 0.05, 0.001),
        ("quick", 0.05, 0.001),
        ("progressive", 0.005, 0.001),
        ("progressive", 0.0025, 0.0005),
        ("progressive", 0.001, 0.0002),
        ("progressive", 0.0015, 0.0005),
        ("progressive", 0.003, 0.003),
        ("quick", 0.05, 0.05),
    ]
    for preset, canary, stable in cases:
        count = runs if preset == "progressive" else runs * 20 // 3
        if canary != stable:
            count = min(count, 100)
        for label, compare in (("before", False), ("now", True)):
            results = [schedule(preset, canary, stable, seed, compare) for seed in range(count)]
            rolled, by, times, paused = _summary(results)
            print(
                f"| {preset} | {canary:.2%} / {stable:.2%} | {label} | {rolled} | {by} | "
                f"{times} | {paused} |"
            )


def latency_schedules(runs: int) -> None:
    print(f"\n## latency p99 over the progressive schedule ({runs} runs a row)\n")
    print(
        "Lognormal latencies (sigma 0.5); limits p99 <= 500 ms (1%, 5%) and <= 1 s (25%, "
        "50%). *before*: the p99 as measured; *now*: from counts at 99.9%, compared with "
        "stable.\n"
    )
    print(
        "| stable p99 | canary | rule | rolled back | by | rollback time median / max (s) "
        "| paused for a person |"
    )
    print("|---|---|---|---|---|---|---|")
    worlds = [
        Latency(400.0),
        Latency(500.0),
        Latency(500.0, 1.2),
        Latency(450.0, 1.2),
        Latency(300.0, 1.2),
    ]
    for world in worlds:
        for label, counted in (("before", False), ("now", True)):
            results = [latency_schedule("progressive", world, s, counted) for s in range(runs)]
            rolled, by, times, paused = _summary(results)
            canary = "same" if world.slower == 1.0 else f"{world.slower:g}x slower"
            print(
                f"| {world.stable_p99:.0f} ms | {canary} | {label} | {rolled} | {by} | "
                f"{times} | {paused} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--cadence", type=int, default=1, help="seconds between sequential looks")
    parser.add_argument("--schedules", type=int, default=0, help="preset schedule walks (0: none)")
    parser.add_argument(
        "--only-schedules", action="store_true", help="skip the time-to-rollback scenarios"
    )
    args = parser.parse_args()
    with open("/proc/cpuinfo") as cpuinfo:
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
        ]
    cpu = models[0] if models else platform.processor()
    print("# bench_analysis (simulation)\n")
    print(f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    started = time.perf_counter()
    if args.only_schedules:
        schedules(args.schedules)
        latency_schedules(args.schedules)
        print(f"\nwall time {time.perf_counter() - started:.1f} s")
        return
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
    if args.schedules:
        schedules(args.schedules)
        latency_schedules(args.schedules)
    print(f"\nwall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
