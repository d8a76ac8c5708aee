"""Seeded traffic for testing and benchmarking the analysis: canary and stable request and error
counts per interval, as a router would count them.

Pure: the random generator is an argument (``random.Random(seed)``), so every run is reproducible.
Each request goes to the canary with probability ``share`` (or, with ``random_routing=False``,
exactly ``round(share * n)`` of them do, as a weighted round-robin would) and fails with its
release's error rate, independently. Counts are drawn per interval from the binomial laws that
per-request simulation would give, at a cost of about one step per *success* drawn.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from nonstop.analysis.sequential import Counts


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw, exact: skip from success to success with geometric gaps.

    The gap before the next success is ``floor(log U / log(1 - p)) + 1`` trials (U uniform on
    (0, 1]); the cost is the number of successes, so rare errors among many requests are cheap.
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    log_q = math.log1p(-p)
    successes, position = 0, 0
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return successes
        successes += 1


@dataclass(frozen=True, slots=True)
class Traffic:
    """The world being simulated: ``rate`` requests/s split between canary and stable."""

    canary_error_rate: float
    stable_error_rate: float
    share: float = 0.05
    rate: float = 200.0
    random_routing: bool = True

    def interval(self, rng: random.Random, seconds: float) -> Counts:
        """One interval's counts (not cumulative)."""
        n = round(self.rate * seconds)
        n_c = binomial(rng, n, self.share) if self.random_routing else round(self.share * n)
        n_s = n - n_c
        return Counts(
            n_c,
            binomial(rng, n_c, self.canary_error_rate),
            n_s,
            binomial(rng, n_s, self.stable_error_rate),
        )
