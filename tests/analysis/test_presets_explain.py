"""Presets as data, explain rows, Verdict round trips, number formatting, the seeded sampler."""

from __future__ import annotations

import doctest
import random
import statistics
from types import ModuleType

import pytest

from nonstop.analysis import verdict, weight
from nonstop.analysis.checks import QueryValue, new_run, step, step_sequential
from nonstop.analysis.explain import COLUMNS, explain, explain_history
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.presets import preset_steps, preset_watch
from nonstop.analysis.simulate import Traffic, binomial
from nonstop.analysis.verdict import Verdict, num
from nonstop.config.schema import CanaryConfig, CheckConfig
from nonstop.errors import UsageError

T0 = 1_780_048_800.0  # 2026-05-29 10:00:00 UTC


def summary(name: str) -> list[tuple[int | None, object, list[tuple[str, float | None]]]]:
    return [
        (s.weight, s.pause, [(c.metric, c.max) for c in s.analysis or []])
        for s in preset_steps(name)
    ]


def test_progressive_preset() -> None:
    strict = [("error_rate", 0.001), ("latency", 500.0)]
    relaxed = [("error_rate", 0.005), ("latency", 1000.0)]
    assert summary("progressive") == [
        (1, 600.0, strict),
        (5, 1800.0, strict),
        (25, 3600.0, relaxed),
        (50, 7200.0, relaxed),
        (100, None, []),
    ]
    watch = preset_watch("progressive")
    assert (watch.duration, watch.max_error_rate, watch.min_requests) == (86400.0, 0.005, 100)
    assert {c.percentile for s in preset_steps("progressive") for c in s.analysis or []} == {99.0}


def test_quick_preset() -> None:
    checks_ = [("error_rate", 0.01), ("latency", 1000.0)]
    assert summary("quick") == [(5, 10.0, checks_), (25, 10.0, checks_), (50, 10.0, checks_),
                                (100, None, [])]  # fmt: skip
    assert preset_watch("quick").duration == 30.0


@pytest.mark.parametrize("name", ["progressive", "quick"])
def test_presets_are_valid_canary_configs(name: str) -> None:
    # weights never decrease, every step passes the schema's own validation
    config = CanaryConfig(steps=preset_steps(name))
    assert [s.weight for s in config.steps][-1] == 100


def test_unknown_preset_is_a_usage_error() -> None:
    message = 'unknown canary preset "fast": expected one of progressive, quick'
    with pytest.raises(UsageError, match=message):
        preset_steps("fast")
    with pytest.raises(UsageError, match='unknown canary preset "fast"'):
        preset_watch("fast")


ERR = CheckConfig(metric="error_rate", max=0.001, failure_limit=2, confidence=0)
P99 = CheckConfig(metric="latency", max=500)
QUERY = CheckConfig(metric="query", query="up", min=1)


def measured(release: str, second: int, requests: int, errors: int) -> Measurement:
    status = {"2xx": requests - errors, "5xx": errors}
    return Measurement(release, T0, T0 + second, requests, status, 0, {99.0: 120.0})


def test_explain_rows() -> None:
    run = new_run([ERR, P99, QUERY])
    run, _ = step(run, ERR, measured("v2", 10, 400, 1))  # 0.0025 > 0.001: 1 of 2 allowed
    run, _ = step(run, QUERY, QueryValue("v2", T0, T0 + 10, None, error="no such metric"))
    run, _ = step_sequential(run, measured("v2", 10, 400, 1), measured("v1", 10, 7600, 20))
    assert [r.cells() for r in explain(run)] == [
        ("error_rate", "400", "0.0025", "<= 0.001", "fail",
         "error_rate 0.0025 > max 0.001 over 400 requests (canary v2, 10:00:00-10:00:10) "
         "[0 passed, 1 failed, 0 inconclusive]"),
        ("latency_p99", "0", "-", "<= 500ms", "pending", "no window measured yet"),
        ("query", "0", "-", ">= 1", "inconclusive",
         "query: no such metric (canary v2, 10:00:00-10:00:10) [0 passed, 0 failed, 1 inconclusive]"),  # noqa: E501
        # 21 errors, 1 on the 5% canary: 0.1 * (0.894 + 0.718 + 0.405 + 0.109 + 0.004 + ...) = 0.213
        ("sequential", "21", "0.213", "e < 100", "pass",
         "canary 1/400 errors (0.25%) vs stable 20/7600 (0.263%), canary share 5%: e-value 0.213 "
         "< 1/alpha 100 (canary v2 vs stable v1, 10:00:00-10:00:10)"),
    ]  # fmt: skip
    assert run.phase == "running"  # one failing window of failure_limit 2
    run, _ = step(run, ERR, measured("v2", 20, 400, 2))
    assert explain(run)[0].verdict == "fail"
    assert run.phase == "failed"
    history = explain_history(run)
    assert [(r.check, r.verdict) for r in history] == [
        ("error_rate", "fail"), ("error_rate", "fail"), ("query", "inconclusive"),
        ("sequential", "pass"),
    ]  # fmt: skip
    assert set(history[0].to_dict()) == set(COLUMNS)
    assert explain(new_run([], sequential=None)) == []


def test_verdict_round_trip_and_bad_outcome() -> None:
    v = Verdict("fail", "error_rate", "why", 0.05, 0.001, 412, T0, T0 + 10)
    assert Verdict.from_dict(v.to_dict()) == v
    assert Verdict.from_dict(Verdict("pass", "x", "y").to_dict()) == Verdict("pass", "x", "y")
    with pytest.raises(ValueError, match="outcome must be one of pass, fail, inconclusive"):
        Verdict("ok", "x", "y")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.05243, "0.0524"), (0.001, "0.001"), (0.0005, "0.0005"), (612.4, "612"), (1234.5, "1234"),
     (87.25, "87.2"), (1.0, "1"), (0.0, "0"), (-0.25, "-0.25"), (float("inf"), "inf")],
)  # fmt: skip
def test_num(value: float, text: str) -> None:
    assert num(value) == text


@pytest.mark.parametrize("module", [verdict, weight])
def test_doc_examples(module: ModuleType) -> None:
    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(("n", "p"), [(20, 0.3), (1000, 0.01), (50, 0.9)])
def test_binomial_sampler_matches_mean_and_variance(n: int, p: float) -> None:
    rng = random.Random(7)
    draws = [binomial(rng, n, p) for _ in range(20_000)]
    assert all(0 <= d <= n for d in draws)
    # 20,000 draws: the sample mean is within 4 standard errors of n*p
    assert statistics.fmean(draws) == pytest.approx(
        n * p, abs=4 * (n * p * (1 - p) / 20_000) ** 0.5
    )
    assert statistics.variance(draws) == pytest.approx(n * p * (1 - p), rel=0.05)


def test_binomial_edges_and_exact_split() -> None:
    rng = random.Random(1)
    assert (binomial(rng, 0, 0.5), binomial(rng, 10, 0.0), binomial(rng, 10, 1.0)) == (0, 0, 10)
    counts = Traffic(0.0, 0.0, share=0.05, random_routing=False).interval(rng, 1.0)
    assert (counts.canary_requests, counts.stable_requests) == (10, 190)
