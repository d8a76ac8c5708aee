"""Is the canary worse than the stable release over the same data? An exact one-sided test.

Used at the end of a step, when a check's whole data still cannot tell the canary from its
limit (:func:`nonstop.analysis.checks.conclude`): a canary sitting at its limit beside a stable
release that sits there too is not what makes things bad, and should not wait for a person.

What is counted: for an ``error_rate`` check the 5xx of each release; for a ``latency`` check
judged from counts the requests slower than its ``max`` (a p99 above ``max`` is exactly "more
than 1% of requests slower than max"). ``k`` of the canary's ``n_c`` requests and ``m`` of the
stable's ``n_s`` are "bad".

The null is the sequential test's (:mod:`nonstop.analysis.sequential`): a request's chance of
being bad does not depend on the release that served it. Given the counts, the ``k + m`` bad
requests are then a uniformly random subset of all ``n_c + n_s``, so ``k`` is hypergeometric, and
the one-sided p-value is ``P(X >= k)`` for ``X ~ Hypergeometric(n_c + n_s, k + m, n_c)``:
Fisher's exact test. It is valid for the whole one-sided null "canary no worse than stable" (a
better canary makes ``k`` stochastically smaller), exact at any count (no normal
approximation), and conditions on the measured request counts, so the share the router really
sent is what counts, not the weight set. The canary is *worse than stable* at confidence ``c``
when the p-value is below ``1 - c``. (Drawing with replacement instead gives the conditional
binomial test ``Binomial(k + m, n_c / (n_c + n_s))``, the same null; for rare errors the two
agree to a few percent.)

Worked examples (the canary's share of requests is 5%, except the 1% step's)::

    canary           stable             rates              p         at 99.9%
    9/18,000         171/342,000        0.05% vs 0.05%     0.548     not worse
    12/18,000        171/342,000        0.067% vs 0.05%    0.207     not worse
    27/18,000        171/342,000        0.15% vs 0.05%     2.5e-6    worse
    1/1,200          59/118,800         0.083% vs 0.05%    0.453     not worse (1% share)
    2/10             0/190              both errors on a 5% share: 45 / C(200, 2) = 0.00226

(The conditional binomial test gives 0.548, 0.207 and 2.48e-6 for the first three.)
"""

from __future__ import annotations

import math

from nonstop.analysis.measurement import Measurement
from nonstop.analysis.verdict import Verdict, num


def worse_p_value(k: int, n_c: int, m: int, n_s: int) -> float:
    """``P(X >= k)``, ``X ~ Hypergeometric(n_c + n_s, k + m, n_c)``: how likely ``k`` or more
    of the ``k + m`` bad requests land on the canary when the release does not matter.

    >>> round(worse_p_value(2, 10, 0, 190), 5)  # both errors on a 5% share: 45 / 19900
    0.00226
    >>> worse_p_value(0, 100, 5, 1900)
    1.0
    """
    if k <= 0:
        return 1.0
    total, bad = n_c + n_s, k + m
    high = min(bad, n_c)
    if k > high or bad > total:
        return 0.0

    def log_pmf(x: int) -> float:
        return _log_choose(n_c, x) + _log_choose(n_s, bad - x) - _log_choose(total, bad)

    mode = (n_c + 1) * (bad + 1) // (total + 2)
    term, p, x = math.exp(log_pmf(k)), 0.0, k
    while x <= high:
        p += term
        if x > mode and term < p * 1e-16:
            break
        # pmf(x + 1) / pmf(x) for the hypergeometric law
        term *= (n_c - x) * (bad - x) / ((x + 1) * (n_s - bad + x + 1))
        x += 1
    return min(1.0, p)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def compare(
    name: str,
    what: str,
    canary: tuple[int, int],
    stable: tuple[int, int],
    confidence: float,
    where: str,
) -> Verdict:
    """``fail`` when the canary's share of ``what`` (``(bad, requests)``) is worse than the
    stable's at ``confidence`` (Fisher's exact test, see the module doc), else ``pass``. The
    value is the p-value, the threshold ``1 - confidence``."""
    (k, n_c), (m, n_s) = canary, stable
    p = worse_p_value(k, n_c, m, n_s)
    alpha = 1.0 - confidence
    pct = f"{num(100 * confidence)}%"
    counts = (
        f"canary {k}/{n_c} {what} ({_pct(k, n_c)}) vs stable {m}/{n_s} ({_pct(m, n_s)}), "
        f"one-sided p = {num(p)}"
    )
    if p < alpha:
        reason = f"{name}: canary worse than stable at {pct}: {counts} < {num(alpha)} {where}"
        return Verdict("fail", name, reason, p, alpha, n_c + n_s)
    reason = f"{name}: canary not worse than stable at {pct}: {counts} {where}"
    return Verdict("pass", name, reason, p, alpha, n_c + n_s)


def _pct(bad: int, requests: int) -> str:
    return f"{num(100 * bad / requests)}%" if requests else "n/a"


def usable(data: Measurement | None) -> bool:
    """A baseline the comparison can use: complete, with requests."""
    return data is not None and data.complete and data.requests > 0
