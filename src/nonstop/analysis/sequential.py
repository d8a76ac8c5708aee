"""An always-valid sequential test: does the canary fail more often than the stable release?

Look at it as often as you like (every second, every request): the chance that it ever fails an
identical canary is at most ``alpha`` (default 1%), and a clearly bad canary fails after a few
errors instead of after a fixed window.

The question, per error
-----------------------
Feed cumulative counts at any times. Each feed closes an *interval* with ``n_c`` canary requests,
``n_s`` stable ones, ``k`` canary errors and ``m`` stable errors. Let ``pi = n_c / (n_c + n_s)``,
the canary's *measured* share of the interval's requests.

- H0 (identical releases): within one interval a request fails with the same probability
  whichever release served it. Given the interval's counts, the ``k + m`` failed requests are then
  a uniformly random subset of its ``n_c + n_s`` requests, and ``k`` is hypergeometric.
- H1 (worse canary): the canary's error rate is ``rho`` times the stable's, ``rho > 1``. Then an
  error is the canary's with probability ``theta = pi*rho / (pi*rho + 1 - pi)``.

The interval's likelihood ratio for one ``rho`` is::

    f_rho = (theta / pi) ** k * ((1 - theta) / (1 - pi)) ** m

If each error were the canary's independently with probability ``pi`` (binomial), ``E[f_rho] = 1``
exactly. Under the exact conditional null (hypergeometric: errors drawn *without* replacement)
``E[f_rho] <= 1``, because ``f_rho`` is convex in ``k`` (``m = k + m - k``) and sampling without
replacement is smaller in convex order than with (Hoeffding 1963, Theorem 4). So the product of
the factors over intervals is a nonnegative supermartingale under H0, and so is the mixture::

    E_t = sum_j  w_j * prod_{intervals <= t} f_{rho_j}       (weights w_j fixed, summing to 1)

Ville's inequality: ``P_H0(E_t >= 1/alpha for some t) <= alpha``. The test fails the canary the
first time ``E_t >= 1/alpha`` and that verdict is final. ``E_t`` is never negative; it is kept in
log space per component, so it neither overflows nor underflows to a wrong answer.

The mixture (:data:`DEFAULT_GRID`) puts equal weight 0.1 on ten ratios ``rho`` from 1.5 to 10,000,
roughly even in ``log rho``: a canary that fails while the stable release does not (the common bad
deploy) is caught after two or three errors; a canary twice as bad as stable still is, later.
(A grid with 40% on ``rho >= 1000`` was measured too: it saved 0.1 errors on average in the bad
case and cost 3% in the 2x case, not worth a less obvious prior.)

Why the measured share is still valid
-------------------------------------
The share is not estimated and then trusted: the test *conditions* on each interval's request
counts, and under H0 the routing then does not matter at all. What matters is that, within one
interval, being served by the canary does not change a request's chance of failing under H0 (error
bursts that hit both releases are fine). Using the *set* weight instead would be wrong whenever the
data plane does not honour it: a router that sends 7% of requests to an identical canary set at 5%
makes that canary look 1.4x worse, and the test would eventually fail it (a seeded test pins
this). Keep intervals short, so the share and the base error rate barely move within one: the
engine feeds every second, and measurements restart at each step change, where the share jumps.

Worked example
--------------
200 requests/s, canary share 5%: 10 canary and 190 stable requests per second. In the first
second one canary request fails and no stable one does (``k = 1, m = 0, pi = 0.05``):

- ``rho = 10000``: ``theta = 500 / 500.95 = 0.9981``, ``f = 0.9981 / 0.05 = 19.96``;
- ``rho = 1000``: ``theta = 0.9814``, ``f = 19.63``; ``rho = 100``: ``f = 16.81``;
- ``rho = 10``: ``theta = 0.3448``, ``f = 6.90``; ``rho = 1.5``: ``theta = 0.0732``, ``f = 1.46``.

Mixed with weight 0.1 each that is ``E = 10.46``. Another canary error in the next second (again
no stable error) squares each factor: ``E = 0.1 * (19.96^2 + 19.63^2 + ... + 1.46^2) = 164.8
>= 100 = 1/alpha``: fail, after 2 failed requests and 2 seconds. Had those two errors come from
an identical canary, both landing on a 5% share has probability 0.25%, and Ville bounds every
such path together by 1%. A stable error instead
multiplies the ``rho = 10000`` component by ``(1 - 0.9981) / 0.95 = 0.002``: one error on stable
all but removes the "stable never fails" explanation (a stable error in a third second instead
brings ``E`` from 164.8 down to 19.9), and the rest of the grid takes over.

Cumulative counts and restarts
------------------------------
:func:`observe` takes counts cumulative since the test started and closes an interval with the
differences. :func:`observe_windows` takes two Measurements (canary, stable) of the same window:
counts cumulative within a window (same ``start``) are differenced; a window that starts at or
after the end of the last one is new (counts restart, as they do at each canary step). A new
window that overlaps counts already used (it starts before the last one ended) would count them
twice: that feed is ``inconclusive`` and its counts become the window's baseline, so the next
feeds of the same window add only what came after it. Dropping data that way is valid (what is
dropped does not depend on which release failed), and the test never gets stuck on a clock
skew between a step change and the last measurement. Counts that go backwards (a restarted
counter) are ``inconclusive`` and become the baseline the same way; errors above requests are
``inconclusive`` and change nothing. Nothing is raised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import cast

from nonstop.analysis.measurement import Measurement
from nonstop.analysis.verdict import Outcome, Verdict, num, window

DEFAULT_ALPHA = 0.01
LOG_E_CAP = 700.0
DEFAULT_RATIOS = (1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 10000.0)
DEFAULT_GRID: tuple[tuple[float, float], ...] = tuple((rho, 0.1) for rho in DEFAULT_RATIOS)
"""(rho, prior weight) pairs: rho is the canary's error rate over the stable's under H1."""


@dataclass(frozen=True, slots=True)
class Counts:
    """Request and error counts of the canary and the stable release."""

    canary_requests: int = 0
    canary_errors: int = 0
    stable_requests: int = 0
    stable_errors: int = 0

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.canary_requests - other.canary_requests,
            self.canary_errors - other.canary_errors,
            self.stable_requests - other.stable_requests,
            self.stable_errors - other.stable_errors,
        )

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.canary_requests + other.canary_requests,
            self.canary_errors + other.canary_errors,
            self.stable_requests + other.stable_requests,
            self.stable_errors + other.stable_errors,
        )

    def problem(self) -> str | None:
        """Why these counts cannot be an interval's, or None when they can."""
        fields = (
            self.canary_requests,
            self.canary_errors,
            self.stable_requests,
            self.stable_errors,
        )
        if min(fields) < 0:
            return "counts went backwards"
        if self.canary_errors > self.canary_requests:
            return f"canary errors {self.canary_errors} > canary requests {self.canary_requests}"
        if self.stable_errors > self.stable_requests:
            return f"stable errors {self.stable_errors} > stable requests {self.stable_requests}"
        return None

    def to_list(self) -> list[int]:
        return [self.canary_requests, self.canary_errors, self.stable_requests, self.stable_errors]


@dataclass(frozen=True, slots=True)
class SequentialRun:
    """The test's whole state: plain data, journaled with ``to_dict``."""

    alpha: float = DEFAULT_ALPHA
    grid: tuple[tuple[float, float], ...] = DEFAULT_GRID
    log_lr: tuple[float, ...] = ()
    """Per grid component, ``log prod f_rho`` so far."""
    total: Counts = Counts()
    """Sum of every interval fed so far."""
    seen: Counts = Counts()
    """The last cumulative counts fed (within the current window, for :func:`observe_windows`)."""
    window_start: float | None = None
    window_end: float | None = None
    first_start: float | None = None
    rejected: bool = False
    last: Verdict | None = None

    @property
    def threshold(self) -> float:
        return 1.0 / self.alpha

    @property
    def e_value(self) -> float:
        """The e-value, capped at ``e**700`` (about 1e304) so it stays a finite float for JSON;
        the cap is far beyond any ``1/alpha``."""
        return math.exp(min(self.log_e_value, LOG_E_CAP))

    @property
    def log_e_value(self) -> float:
        logs = self.log_lr or (0.0,) * len(self.grid)
        terms = [math.log(w) + lr for (_, w), lr in zip(self.grid, logs, strict=True)]
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms))

    def to_dict(self) -> dict[str, object]:
        return {
            "alpha": self.alpha,
            "grid": [list(g) for g in self.grid],
            "log_lr": list(self.log_lr),
            "total": self.total.to_list(),
            "seen": self.seen.to_list(),
            "window_start": self.window_start,
            "window_end": self.window_end,
            "first_start": self.first_start,
            "rejected": self.rejected,
            "last": None if self.last is None else self.last.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SequentialRun:
        def opt(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(cast(float, value))

        grid = cast(Sequence[Sequence[float]], data["grid"])
        last = data.get("last")
        return cls(
            alpha=float(cast(float, data["alpha"])),
            grid=tuple((float(r), float(w)) for r, w in grid),
            log_lr=tuple(float(x) for x in cast(Sequence[float], data.get("log_lr", ()))),
            total=Counts(*cast(Sequence[int], data.get("total", (0, 0, 0, 0)))),
            seen=Counts(*cast(Sequence[int], data.get("seen", (0, 0, 0, 0)))),
            window_start=opt("window_start"),
            window_end=opt("window_end"),
            first_start=opt("first_start"),
            rejected=bool(data.get("rejected", False)),
            last=None if last is None else Verdict.from_dict(cast(Mapping[str, object], last)),
        )


def new_sequential(
    alpha: float = DEFAULT_ALPHA, grid: Sequence[tuple[float, float]] = DEFAULT_GRID
) -> SequentialRun:
    """A test with no data (``e_value == 1``)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not grid or any(rho <= 1 or w <= 0 for rho, w in grid):
        raise ValueError("grid needs (rho > 1, weight > 0) pairs")
    total_weight = sum(w for _, w in grid)
    normalised = tuple((float(rho), w / total_weight) for rho, w in grid)
    return SequentialRun(alpha=alpha, grid=normalised, log_lr=(0.0,) * len(normalised))


def update(run: SequentialRun, interval: Counts) -> SequentialRun:
    """Fold one interval's counts into the e-process (the math in the module doc)."""
    n_c, n_s = interval.canary_requests, interval.stable_requests
    k, m = interval.canary_errors, interval.stable_errors
    logs = run.log_lr or (0.0,) * len(run.grid)
    if (k or m) and n_c and n_s:
        pi = n_c / (n_c + n_s)
        logs = tuple(
            lr + _log_factor(pi, rho, k, m) for (rho, _), lr in zip(run.grid, logs, strict=True)
        )
    return replace(run, log_lr=logs, total=run.total + interval)


def _log_factor(pi: float, rho: float, k: int, m: int) -> float:
    theta = pi * rho / (pi * rho + 1.0 - pi)
    # log((1 - theta) / (1 - pi)) = log(1 / (pi*rho + 1 - pi)): exact, no 1 - 0.99999 cancellation
    return k * math.log(theta / pi) - m * math.log(pi * rho + 1.0 - pi)


def observe(
    run: SequentialRun,
    cumulative: Counts,
    *,
    start: float | None = None,
    end: float | None = None,
    label: str = "canary",
) -> tuple[SequentialRun, Verdict]:
    """Feed counts cumulative since the test started; return the new state and its verdict.

    Once the test has failed it stays failed: the rejection's verdict is returned again (new
    counts are still added to the totals).
    Counts that went backwards (a restarted counter) are skipped and become the baseline."""
    interval = cumulative - run.seen
    problem = interval.problem()
    if problem is not None:
        reason = f"sequential: {problem} ({label}); counts ignored"
        backwards = min(interval.to_list()) < 0
        if backwards and cumulative.problem() is None:  # a counter reset: go on from here
            run = replace(run, seen=cumulative)
            reason = f"sequential: {problem} ({label}); taken as a reset, counted from here"
        return run, Verdict("inconclusive", "sequential", reason, run.e_value, run.threshold)
    first = run.first_start if run.first_start is not None else start
    advanced = replace(update(run, interval), seen=cumulative, first_start=first)
    if end is not None:
        advanced = replace(advanced, window_end=end)
    if run.rejected and run.last is not None:  # final: the rejection stands as it was made
        return advanced, run.last
    verdict = _verdict(advanced, label, first, end)
    return replace(advanced, rejected=verdict.outcome == "fail", last=verdict), verdict


def _verdict(run: SequentialRun, label: str, start: float | None, end: float | None) -> Verdict:
    t = run.total
    e = run.e_value
    share = t.canary_requests / max(1, t.canary_requests + t.stable_requests)
    where = f"{label}, {window(start, end)}" if start is not None and end is not None else label
    canary = f"{t.canary_errors}/{t.canary_requests}"
    stable = f"{t.stable_errors}/{t.stable_requests}"
    counts = (
        f"canary {canary} errors ({_pct(t.canary_errors, t.canary_requests)}) vs stable {stable} "
        f"({_pct(t.stable_errors, t.stable_requests)}), canary share {num(100 * share)}%"
    )
    if e >= run.threshold:
        reason = (
            f"{counts}: e-value {num(e)} >= 1/alpha {num(run.threshold)}: the canary fails more "
            f"often than its share of traffic explains ({where})"
        )
        outcome: Outcome = "fail"
    else:
        reason = f"{counts}: e-value {num(e)} < 1/alpha {num(run.threshold)} ({where})"
        outcome = "pass"
    samples = t.canary_errors + t.stable_errors
    return Verdict(outcome, "sequential", reason, e, run.threshold, samples, start, end)


def _pct(errors: int, requests: int) -> str:
    return f"{num(100 * errors / requests)}%" if requests else "n/a"


def observe_windows(
    run: SequentialRun, canary: Measurement, stable: Measurement
) -> tuple[SequentialRun, Verdict]:
    """Feed the canary's and the stable release's Measurements of one window (see module doc)."""
    label = f"canary {canary.release} vs stable {stable.release}"
    counts = Counts(canary.requests, canary.errors, stable.requests, stable.errors)
    if not (canary.complete and stable.complete):
        reason = (
            f"sequential: window {window(canary.start, canary.end)} began before the request "
            f"records kept now (an agent restart?) ({label}); counts ignored"
        )
        return run, Verdict("inconclusive", "sequential", reason, run.e_value, run.threshold)
    if canary.start != stable.start:
        reason = (
            f"sequential: canary window starts at {canary.start:g} but stable at {stable.start:g}; "
            f"the test needs the same window for both ({label}); counts ignored"
        )
        return run, Verdict("inconclusive", "sequential", reason, run.e_value, run.threshold)
    if run.window_start is not None and canary.start != run.window_start:
        if run.window_end is not None and canary.start < run.window_end:
            reason = (
                f"sequential: window {window(canary.start, canary.end)} overlaps counts already "
                f"used (up to {window(run.window_start, run.window_end)}) ({label}); its counts "
                "so far are skipped, later ones in this window are used"
            )
            problem = counts.problem()
            if problem is None:  # a baseline, so the window's next feeds are differenced from it
                run = replace(run, window_start=canary.start, window_end=canary.end, seen=counts)
            return run, Verdict("inconclusive", "sequential", reason, run.e_value, run.threshold)
        run = replace(run, seen=Counts())  # a new window: its counts start from zero
    run = replace(run, window_start=canary.start)
    return observe(run, counts, start=canary.start, end=canary.end, label=label)
