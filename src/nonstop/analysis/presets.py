"""Canary presets as data: ``preset = "progressive"`` or ``"quick"`` in ``[strategy.canary]``.

``progressive`` (production):

    weight   pause   error_rate   latency p99   judged every   failure_limit
      1%     10 m    <= 0.1%      <= 500 ms     1 m            2
      5%     30 m    <= 0.1%      <= 500 ms     1 m            2
     25%      1 h    <= 0.5%      <= 1 s        1 m            2
     50%      2 h    <= 0.5%      <= 1 s        1 m            2
    100%     then watched for 24 h: error rate <= 0.5% over >= 100 requests

``quick`` (demos and tests): 5%, 25%, 50% for 10 s each (error rate <= 1%, p99 <= 1 s, judged
every 5 s from 20 requests, the first failing window fails), then 100% watched for 30 s.

Windows with fewer than ``min_samples`` requests pool into the next (see
:mod:`nonstop.analysis.checks`), so a 1% canary of a quiet service is judged over longer windows
rather than never. ``failure_limit = 2`` in ``progressive`` tolerates one bad minute in a long
step; the sequential test (on by default) still fails a clearly bad canary within seconds.
"""

from __future__ import annotations

from nonstop.config.schema import CanaryStep, CheckConfig, WatchConfig
from nonstop.errors import UsageError

PRESETS = ("progressive", "quick")


def _checks(
    max_error_rate: float,
    max_p99_ms: float,
    *,
    interval: float,
    min_samples: int,
    failure_limit: int,
) -> list[CheckConfig]:
    common = {"interval": interval, "min_samples": min_samples, "failure_limit": failure_limit}
    return [
        CheckConfig(metric="error_rate", max=max_error_rate, **common),
        CheckConfig(metric="latency", percentile=99.0, max=max_p99_ms, **common),
    ]


def preset_steps(name: str) -> list[CanaryStep]:
    """The steps of a preset (the table in the module doc); the last step sets 100%."""
    if name == "progressive":
        strict = _checks(0.001, 500.0, interval=60.0, min_samples=100, failure_limit=2)
        relaxed = _checks(0.005, 1000.0, interval=60.0, min_samples=100, failure_limit=2)
        plan = [
            (1, 600.0, strict),
            (5, 1800.0, strict),
            (25, 3600.0, relaxed),
            (50, 7200.0, relaxed),
        ]
    elif name == "quick":
        quick = _checks(0.01, 1000.0, interval=5.0, min_samples=20, failure_limit=1)
        plan = [(5, 10.0, quick), (25, 10.0, quick), (50, 10.0, quick)]
    else:
        raise UsageError(f'unknown canary preset "{name}": expected one of {", ".join(PRESETS)}')
    steps = [CanaryStep(weight=w, pause=pause, analysis=checks) for w, pause, checks in plan]
    return [*steps, CanaryStep(weight=100)]


def preset_watch(name: str) -> WatchConfig:
    """How long, and against what, a preset watches the release after it reached 100%."""
    if name == "progressive":
        return WatchConfig(duration=86400.0, max_error_rate=0.005, min_requests=100)
    if name == "quick":
        return WatchConfig(duration=30.0, max_error_rate=0.01, min_requests=20)
    raise UsageError(f'unknown canary preset "{name}": expected one of {", ".join(PRESETS)}')
