"""Canary presets as data: ``preset = "progressive"`` or ``"quick"`` in ``[strategy.canary]``.

``progressive`` (production):

    weight   pause   error_rate   latency p99   judged every   failure_limit   undecided
      1%     10 m    <= 0.1%      <= 500 ms     1 m            2               pass
      5%     30 m    <= 0.1%      <= 500 ms     1 m            2               pause
     25%      1 h    <= 0.5%      <= 1 s        1 m            2               pause
     50%      2 h    <= 0.5%      <= 1 s        1 m            2               pause
    100%     then watched for 24 h: error rate <= 0.5% over >= 100 requests

``quick`` (demos and tests): 5%, 25%, 50% for 10 s each (error rate <= 1%, p99 <= 1 s, judged
every 5 s from 20 requests, the first failing window fails, 99% confidence, undecided
passes), then 100% watched for 30 s.

Latency p99 is judged with the same confidence from counts where the metrics source counts
requests at or below the limit (the router's request stream does; see
:mod:`nonstop.analysis.checks`).

Error rates are judged with a confidence (see :mod:`nonstop.analysis.checks`): a window fails
only when its rate is above the limit with that confidence, passes when below it with it, and
pools with the next windows otherwise. ``progressive`` uses 99.9%: it looks about 220 times
over its schedule, and pooled windows of a canary right at its limit are judged again and again
(seeded runs at 200 requests/s and a 0.1% base rate: 2 threshold rollbacks in 200 at 99.5%, none
at 99.9%). ``quick`` looks 6 times and uses 99%.

``undecided`` is what the end of a step does when the step's whole data still cannot tell the
rate from the limit. Showing a rate below 0.1% at 99.9% takes 6,908 requests without a single
error (``-ln(0.001) / 0.001``): the 1% step sees 1,200 at 200 requests/s, so there the threshold
only guards (fails a rate shown above 0.1%, passes otherwise and says so), and the 5% step, with
18,000 requests, must show it. Likewise ``quick``: 100 canary requests in its first step cannot
show a rate below 1%. From 5% on, a step that cannot tell compares the canary with the stable
release over the same windows (:func:`nonstop.analysis.checks.conclude`): not worse passes,
worse fails, and only a stable release itself above the limit pauses for a person.

Windows with fewer than ``min_samples`` requests pool into the next, so a 1% canary of a quiet
service is judged over longer windows rather than never. ``failure_limit = 2`` in
``progressive`` tolerates one bad minute in a long step; the sequential test (on by default)
still fails a clearly bad canary within seconds.
"""

from __future__ import annotations

from typing import Literal

from nonstop.config.schema import CanaryConfig, CanaryStep, CheckConfig, WatchConfig
from nonstop.errors import UsageError

PRESETS = ("progressive", "quick")


def _checks(
    max_error_rate: float,
    max_p99_ms: float,
    *,
    interval: float,
    min_samples: int,
    failure_limit: int,
    undecided: Literal["pause", "pass"],
    confidence: float,
) -> list[CheckConfig]:
    common = {"interval": interval, "min_samples": min_samples, "failure_limit": failure_limit}
    return [
        CheckConfig(
            metric="error_rate",
            max=max_error_rate,
            confidence=confidence,
            undecided=undecided,
            **common,
        ),
        CheckConfig(
            metric="latency", percentile=99.0, max=max_p99_ms, confidence=confidence, **common
        ),
    ]


def _progressive(
    max_error_rate: float, max_p99_ms: float, undecided: Literal["pause", "pass"]
) -> list[CheckConfig]:
    return _checks(
        max_error_rate,
        max_p99_ms,
        interval=60.0,
        min_samples=100,
        failure_limit=2,
        undecided=undecided,
        confidence=0.999,
    )


def preset_steps(name: str) -> list[CanaryStep]:
    """The steps of a preset (the table in the module doc); the last step sets 100%."""
    if name == "progressive":
        smoke = _progressive(0.001, 500.0, "pass")
        strict = _progressive(0.001, 500.0, "pause")
        relaxed = _progressive(0.005, 1000.0, "pause")
        plan = [
            (1, 600.0, smoke),
            (5, 1800.0, strict),
            (25, 3600.0, relaxed),
            (50, 7200.0, relaxed),
        ]
    elif name == "quick":
        quick = _checks(
            0.01,
            1000.0,
            interval=5.0,
            min_samples=20,
            failure_limit=1,
            undecided="pass",
            confidence=0.99,
        )
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


def latency_bounds(canary: CanaryConfig | None) -> tuple[float, ...]:
    """The ``max`` of every latency check a canary of this configuration judges (its steps',
    or its preset's, and the background ones): the request stream counts the requests at or
    below each, so those checks are judged from counts with a confidence.

    >>> latency_bounds(CanaryConfig(preset="progressive"))
    (500.0, 1000.0)
    """
    if canary is None:
        return ()
    plan = canary.steps or (preset_steps(canary.preset) if canary.preset else [])
    checks = [c for s in plan for c in s.analysis or ()] + list(canary.analysis)
    bounds = (c.max for c in checks if c.metric == "latency" and c.max is not None)
    return tuple(sorted(set(bounds)))
