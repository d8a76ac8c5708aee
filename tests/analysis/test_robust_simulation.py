"""Seeded simulations of the presets' error-rate checks and the sequential test over a whole
schedule at 200 requests/s (pure and fast: counts per window from the binomial laws).

Each run walks the preset's steps as the canary planner does: one window per check interval,
each window folded into the step's analysis (``step``, with the stable release's window as its
baseline), the same counts fed to the sequential test; when a step's pause is over,
``conclude`` decides (and may fail a canary worse than stable); an inconclusive step keeps measuring
as long again as its pause (at least 6 windows), then counts as a pause for a person (and the
simulated person promotes). Rollbacks of good canaries are what the review found (2 of 14
windows with a single error failed a good canary); pauses are reported, not hidden."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from nonstop.analysis.checks import conclude, new_run, rate_bounds, step
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.presets import preset_steps
from nonstop.analysis.sequential import new_sequential, update
from nonstop.analysis.simulate import Traffic
from nonstop.config.schema import CheckConfig


@dataclass
class Run:
    outcome: str  # "completed" or "rolled_back"
    seconds: float  # time of the rollback, or the whole schedule
    by: str = ""  # "sequential" or the check's name
    pauses: int = 0


def simulate(preset: str, canary: float, stable: float, seed: int, rate: float = 200.0) -> Run:
    rng = random.Random(seed)
    sequential = new_sequential()
    now, pauses = 0.0, 0
    for planned in preset_steps(preset)[:-1]:
        assert planned.weight is not None
        assert isinstance(planned.pause, float)
        checks = [c for c in planned.analysis or () if c.metric == "error_rate"]
        interval = min(c.interval for c in checks)
        share = planned.weight / 100  # split exactly, as a weighted round-robin does
        traffic = Traffic(canary, stable, share=share, rate=rate, random_routing=False)
        run = new_run(checks)
        grace = max(planned.pause, 6 * interval)
        elapsed = 0.0
        while True:
            counts = traffic.interval(rng, interval)
            status = {"2xx": counts.canary_requests - counts.canary_errors}
            status["5xx"] = counts.canary_errors
            measured = Measurement("v2", now, now + interval, counts.canary_requests, status)
            stable_status = {"2xx": counts.stable_requests - counts.stable_errors}
            stable_status["5xx"] = counts.stable_errors
            baseline = Measurement("v1", now, now + interval, counts.stable_requests, stable_status)
            now, elapsed = now + interval, elapsed + interval
            sequential = update(sequential, counts)
            if sequential.e_value >= sequential.threshold:
                return Run("rolled_back", now, "sequential", pauses)
            for check in checks:
                run, _ = step(run, check, measured, baseline=baseline)
            if run.phase == "failed":
                return Run("rolled_back", now, "error_rate", pauses)
            if elapsed < planned.pause:
                continue
            verdict = conclude(run).outcome
            if verdict == "pass":
                break
            if verdict == "fail":  # the whole step, compared with stable
                return Run("rolled_back", now, "end of step", pauses)
            if elapsed >= planned.pause + grace:
                pauses += 1  # a person looks, and promotes
                break
    return Run("completed", now, pauses=pauses)


def runs(preset: str, canary: float, stable: float, count: int) -> list[Run]:
    return [simulate(preset, canary, stable, seed) for seed in range(count)]


# --- the bound, from tables ----------------------------------------------------------------

BOUNDS = [
    # (errors, requests, confidence, lower, upper): exact one-sided Clopper-Pearson bounds
    # one error in 1000: lower = 1 - 0.95 ** (1 / 1000) = 0.0000513; anywhere up to 0.47%
    (1, 1000, 0.95, 5.129e-05, 0.004735),
    # none in 3000: upper = 1 - 0.05 ** (1 / 3000) = 0.000998, just below 0.1%
    (0, 3000, 0.95, 0.0, 0.0009981),
    # ... at 99% it takes 4603 requests: 1 - 0.01 ** (1 / 4603) = 0.001
    (0, 4603, 0.99, 0.0, 0.0009999),
    # 3 in 600 (0.5%): lower 0.00136 > 0.001: above 0.1% with 95% confidence
    (3, 600, 0.95, 0.001364, 0.01287),
    # 2 in 600: lower 0.00059, so not shown above 0.1%; upper 1.05%, not below it either
    (2, 600, 0.95, 0.0005926, 0.01046),
    # 0.1% over 18000 requests: 0.065%..0.148%, a 0.1% limit cannot be told either way
    (18, 18000, 0.95, 0.0006464, 0.001483),
    (0, 0, 0.95, 0.0, 1.0),  # nothing known
    (5, 5, 0.95, 0.5493, 1.0),  # all failed: lower = 0.05 ** (1 / 5)
]


@pytest.mark.parametrize(("k", "n", "confidence", "lower", "upper"), BOUNDS)
def test_rate_bounds(k: int, n: int, confidence: float, lower: float, upper: float) -> None:
    got = rate_bounds(k, n, confidence)
    assert got == pytest.approx((lower, upper), rel=1e-3, abs=1e-9)


def test_a_higher_confidence_widens_the_bounds() -> None:
    low95, high95 = rate_bounds(2, 600, 0.95)
    low99, high99 = rate_bounds(2, 600, 0.99)
    assert low99 < low95 < 2 / 600 < high95 < high99


# --- simulations -----------------------------------------------------------------------------

GOOD = [
    # (preset, base error rate of both releases, runs). Over 300 runs of progressive (3 h 40 min
    # each) and 2,000 of quick (30 s): no window-threshold rollback at all; the sequential test
    # and the end-of-step comparison together within 1% (docs/benchmarks/analysis.md).
    ("progressive", 0.0002, 60),
    ("progressive", 0.001, 40),
    ("quick", 0.0002, 400),
    ("quick", 0.001, 400),
]


@pytest.mark.parametrize(("preset", "base", "count"), GOOD)
def test_good_canary_is_not_rolled_back_by_a_threshold(
    preset: str, base: float, count: int
) -> None:
    """Identical releases: no threshold rollback; the sequential test at most at its alpha."""
    results = runs(preset, base, base, count)
    rolled = [r for r in results if r.outcome == "rolled_back"]
    assert [r for r in rolled if r.by not in ("sequential", "end of step")] == []
    assert len(rolled) <= max(1, count // 100), rolled


PAUSES = [
    # (base error rate of both releases, runs, most pauses allowed). Before the comparison with
    # stable: 102/300 paused at 0.05% and 298/300 at 0.1% (the limit); now none in 300.
    (0.0005, 60, 1),
    (0.001, 60, 3),
]


@pytest.mark.parametrize(("base", "count", "most"), PAUSES)
def test_progressive_near_its_limit_does_not_pause_when_stable_is_there_too(
    base: float, count: int, most: int
) -> None:
    results = runs("progressive", base, base, count)
    assert sum(r.pauses > 0 for r in results) <= most


def test_raw_comparison_rolls_back_good_canaries_the_review_case() -> None:
    """The review's case judged raw (``confidence = 0``): both releases at 0.02%, 5% of 200
    requests/s, the progressive preset's 0.1% check over its 30 one-minute windows with
    failure_limit 2: two minutes with a single error each fail the canary."""
    raw = sum(_raw_progressive_step(seed).outcome == "rolled_back" for seed in range(100))
    assert raw >= 50  # measured: 90 of 100 (11% of minutes hold an error; 2 of 30 fail it)


def _raw_progressive_step(seed: int) -> Run:
    rng = random.Random(seed)
    check = CheckConfig(
        metric="error_rate", max=0.001, min_samples=100, failure_limit=2, interval=60, confidence=0
    )
    run = new_run([check])
    traffic = Traffic(0.0002, 0.0002, share=0.05, random_routing=False)
    for minute in range(30):
        counts = traffic.interval(rng, 60)
        status = {"2xx": counts.canary_requests - counts.canary_errors}
        status["5xx"] = counts.canary_errors
        start = 60.0 * minute
        measured = Measurement("v2", start, start + 60, counts.canary_requests, status)
        run, _ = step(run, check, measured)
        if run.phase == "failed":
            return Run("rolled_back", start + 60, "error_rate")
    return Run("completed", 1800.0)


BAD = [
    # (preset, canary rate, stable rate, runs, latest rollback in seconds). The simulation feeds
    # the sequential test once a window (60 s, 5 s); the planner feeds it every second, so its
    # times here are upper bounds. Measured over 100 runs each (max / median):
    ("progressive", 0.05, 0.001, 20, 120.0),  # 5%: sequential, 120 / 60 s
    ("quick", 0.05, 0.001, 20, 20.0),  # 5%: sequential, 20 / 10 s
    ("progressive", 0.005, 0.001, 20, 1080.0),  # 0.5% vs a 0.1% limit: 1080 / 660 s
    ("progressive", 0.005, 0.0002, 20, 780.0),  # same, cleaner stable: 780 / 300 s
    ("progressive", 0.003, 0.003, 20, 2700.0),  # both 0.3%, only the threshold: 2700 / 1560 s
    ("progressive", 0.0025, 0.0005, 20, 1740.0),  # 5x stable: 1740 / 780 s
    ("progressive", 0.0015, 0.0005, 20, 2520.0),  # over the limit, stable under: 2520 / 1440 s
    ("quick", 0.05, 0.05, 20, 20.0),  # both 5%: the 1% threshold, 20 / 10 s
]


@pytest.mark.parametrize(("preset", "canary", "stable", "count", "latest"), BAD)
def test_bad_canary_is_rolled_back(
    preset: str, canary: float, stable: float, count: int, latest: float
) -> None:
    results = runs(preset, canary, stable, count)
    assert all(r.outcome == "rolled_back" for r in results), results
    assert max(r.seconds for r in results) <= latest, sorted(r.seconds for r in results)
