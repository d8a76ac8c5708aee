"""Does the data plane send the canary the share of traffic that was set?

The router is told "5% to v2"; this check reads back what it did. The measured share
``canary_requests / total_requests`` must lie within ``tolerance`` (an absolute difference of
shares: 0.05 is 5 percentage points) of ``set_weight`` percent. A share measured from few requests
is noisy, so the decision uses a 99% Wilson score interval ``[lo, hi]`` for the true share:

- ``pass``: the whole interval lies inside ``[w - tolerance, w + tolerance]``;
- ``fail``: the whole interval lies outside it (the router is off, not unlucky);
- ``inconclusive``: the interval straddles an edge (more data will tell), or there are fewer than
  ``min_samples`` requests.

Worked examples (set 5%, tolerance 0.05, so the band is [0%, 10%]):

    48 of 1000 requests:  4.8%, interval 3.3%-6.9%    inside the band     -> pass
    121 of 1000:          12.1%, interval 9.7%-15.0%  straddles 10%       -> inconclusive
    500 of 1000:          50%, interval 46%-54%       outside             -> fail (round robin?)
    3 of 20:              15%, interval 3.9%-44%      straddles           -> inconclusive
"""

from __future__ import annotations

import math
from statistics import NormalDist

from nonstop.analysis.verdict import Verdict, num

DEFAULT_CONFIDENCE = 0.99


def wilson_interval(
    successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (good at 0 and n successes, too).

    >>> lo, hi = wilson_interval(48, 1000); round(lo, 4), round(hi, 4)
    (0.0334, 0.0686)
    """
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    # at 0 (or n) successes the bound is exactly 0 (or 1); rounding could leave 1e-18 instead
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def weight_verdict(
    set_weight: float,
    canary_requests: int,
    total_requests: int,
    tolerance: float,
    min_samples: int,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Verdict:
    """Compare the measured canary share with ``set_weight`` (percent, 0-100); see module doc."""
    target = set_weight / 100
    if total_requests < min_samples:
        reason = (
            f"weight: not enough data, {total_requests} requests < min_samples {min_samples} "
            f"(set weight {num(set_weight)}%)"
        )
        return Verdict("inconclusive", "weight", reason, None, target, total_requests)
    share = canary_requests / total_requests
    lo, hi = wilson_interval(canary_requests, total_requests, confidence)
    band_lo, band_hi = target - tolerance, target + tolerance
    measured = (
        f"canary share {_pct(share)} ({canary_requests} of {total_requests} requests, "
        f"{num(100 * confidence)}% interval {_pct(lo)}-{_pct(hi)})"
    )
    within = f"within {num(100 * tolerance)} points of the set weight {num(set_weight)}%"
    if band_lo <= lo and hi <= band_hi:
        outcome, reason = "pass", f"{measured} is {within}"
    elif hi < band_lo or lo > band_hi:
        outcome = "fail"
        reason = f"{measured} is not {within}: the router does not send what was set"
    else:
        outcome, reason = "inconclusive", f"{measured}: cannot tell yet whether it is {within}"
    return Verdict(outcome, "weight", reason, share, target, total_requests)  # type: ignore[arg-type]


def _pct(share: float) -> str:
    return f"{num(100 * share)}%"
