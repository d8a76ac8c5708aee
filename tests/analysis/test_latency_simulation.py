"""Seeded simulations of the ``progressive`` preset's p99 checks over its whole schedule, judged
from counts (the walk of ``benchmarks/bench_analysis.py``, fewer runs).

Latencies are lognormal (sigma 0.5 in log space); the stable release's p99 is given and the
canary's every request is ``slower`` times as long (the same shape). Per one-minute window the
number of requests slower than the check's ``max`` is a binomial draw; windows fold into the
step's analysis with the stable release's as baseline; ``conclude`` decides at the pause's end.
"""

from __future__ import annotations

import math
import random

import pytest

from nonstop.analysis.checks import conclude, new_run, step
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.presets import preset_steps
from nonstop.analysis.simulate import binomial

Z99 = 2.3263478740408408


def slow_share(stable_p99: float, bound: float, factor: float, sigma: float = 0.5) -> float:
    """P(latency > bound) for a release ``factor`` times as slow as the stable one."""
    mu = math.log(stable_p99) - Z99 * sigma
    return 0.5 * math.erfc((math.log(bound / factor) - mu) / sigma / math.sqrt(2))


def counted(release: str, n: int, slow: int, bound: float, start: float) -> Measurement:
    le = {bound: n - slow, math.inf: n}
    return Measurement(release, start, start + 60, n, {"2xx": n}, 0, {99.0: bound}, True, le)


def walk(stable_p99: float, slower: float, seed: int) -> str:
    """``completed``, ``paused`` or how it was rolled back."""
    rng, now = random.Random(seed), 0.0
    for planned in preset_steps("progressive")[:-1]:
        assert planned.weight is not None
        assert isinstance(planned.pause, float)
        (check,) = [c for c in planned.analysis or () if c.metric == "latency"]
        assert check.max is not None
        n_c = round(12_000 * planned.weight / 100)  # 200 requests/s, one-minute windows
        run, elapsed = new_run([check]), 0.0
        while True:
            slow_c = binomial(rng, n_c, slow_share(stable_p99, check.max, slower))
            slow_s = binomial(rng, 12_000 - n_c, slow_share(stable_p99, check.max, 1.0))
            canary = counted("v2", n_c, slow_c, check.max, now)
            stable = counted("v1", 12_000 - n_c, slow_s, check.max, now)
            run, _ = step(run, check, canary, baseline=stable)
            now, elapsed = now + 60, elapsed + 60
            if run.phase == "failed":
                return "window"
            if elapsed < planned.pause:
                continue
            outcome = conclude(run).outcome
            if outcome == "fail":
                return "end of step"
            if outcome == "pass":
                break
            if elapsed >= 2 * planned.pause:
                return "paused"
    return "completed"


@pytest.mark.parametrize("stable_p99", [500.0, 400.0])
def test_good_canaries_are_not_rolled_back_on_latency(stable_p99: float) -> None:
    """Both p99 at the limit (500 ms) or below it: judged as measured, every canary at the
    limit was rolled back (300 of 300 in the benchmark); from counts, none."""
    assert [walk(stable_p99, 1.0, seed) for seed in range(15)] == ["completed"] * 15


@pytest.mark.parametrize("stable_p99", [500.0, 450.0])
def test_a_canary_20_percent_slower_is_rolled_back(stable_p99: float) -> None:
    """The canary's p99 1.2x the stable's (600 or 540 ms against 500): rolled back in every
    run, by a pooled window or at the end of a step (300 of 300 in the benchmark)."""
    outcomes = [walk(stable_p99, 1.2, seed) for seed in range(15)]
    assert set(outcomes) <= {"window", "end of step"}, outcomes
