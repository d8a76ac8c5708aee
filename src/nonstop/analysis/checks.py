"""Threshold checks (error rate, latency percentile, custom query) and the running state of an
analysis as plain data.

One look: :func:`judge` turns a check and one window's data into a Verdict.

- ``error_rate``: ``errors / requests`` (every 5xx, the router's own included) against the
  bounds ``max``/``min``.
- ``latency``: the ``percentile`` (default p99) in milliseconds against ``max``/``min``.
- ``query``: a number a metrics provider computed from the check's PromQL template, handed in as a
  :class:`QueryValue`; ``value=None`` with the provider's error message is inconclusive with that
  message, never a pass.

Error rates are counts, and a few requests say little about a rate: one error in 600 requests is
0.17%, but a release failing 0.02% of its requests does that one minute in nine. So an
``error_rate`` check judges with a one-sided **confidence** (``confidence = 0.95`` by default,
:func:`rate_bounds`, exact Clopper-Pearson): the window *fails* only when the rate is above
``max`` with that confidence (its lower bound > max), *passes* only when it is below (its upper
bound <= max), and is otherwise ``inconclusive`` ("not enough data to tell it from the limit"),
with the point estimate as its value. Worked examples, max 0.001 at 95%::

    600 requests, 3 errors   -> bounds 0.136%..1.29%, lower > 0.1%            -> fail
    600 requests, 1 error    -> bounds 0.0085%..0.79%, straddles 0.1%         -> inconclusive
    3000 requests, 0 errors  -> upper 1 - 0.05 ** (1 / 3000) = 0.0998% <= 0.1% -> pass
    12 requests, 12 errors   -> 12 < min_samples 50                           -> inconclusive

The outcome is decided from the binomial tails at ``max`` itself (``P(X >= k) < 1 - confidence``
fails, ``P(X <= k) <= 1 - confidence`` passes), so it is exact; the bounds are for people.
``confidence = 0`` compares the raw rate (``> max`` fails, equal passes), as query checks always
do (a query's value is whatever the PromQL computes). Raw example: 412 requests, 21 errors ->
0.051 > 0.001 -> fail.

A ``latency`` check with a confidence is judged the same way from counts when the source
counted the requests at or below its ``max`` (``Measurement.latency_le``): the p-th percentile
is above ``max`` exactly when more than ``1 - p`` of the requests are slower than ``max``, so the
slow requests are an "error rate" against the limit ``1 - p`` (the order-statistic bound on a
quantile). p99 <= 500 ms at 95% over 1000 requests: at most 4 slower passes, 16 or more fail,
in between pools. Without counts (or with a ``min``, or ``confidence = 0``) the percentile is
compared as measured, after ``min_samples`` requests.

Many looks: :func:`step` folds one window into an :class:`AnalysisRun` and returns that window's
Verdict. The run, not the window, decides the rollout (STYLE.md #2, as Argo Rollouts'
AnalysisRun phase versus its Measurements):

- **failure_limit**: a check *fails* once ``failure_limit`` of its windows have failed (in total,
  not necessarily in a row). ``failure_limit = 1`` (the default) fails on the first failing window;
  this is Argo's ``failureLimit: failure_limit - 1`` ("fail when failed > failureLimit").
- **inconclusive_limit**: a check turns *inconclusive* once ``inconclusive_limit`` windows in a row
  were inconclusive for want of data (default 6: a minute at the default 10 s interval). A judged
  window resets the streak, and so does an *undecided* one (an error rate that had its requests
  but could not be told from its limit): data is coming, the pooled window grows, and the
  decision comes as soon as the data supports it. The engine then pauses for a person instead of
  guessing.
- **pooling**: a window with fewer than ``min_samples`` requests, or undecided, is not thrown
  away. It is kept
  (``pending``) and later windows are added to it, so at low traffic a check judges longer windows
  rather than never judging. Counts add up exactly; a latency percentile of the pooled window is
  taken as the highest of the parts' (if no part has more than 1% of its requests above x, the
  union has none either, so that is an upper bound on the union's p99 and errs towards failing).
  Both ways of feeding work: a window with the same ``start`` as the pending one is that window
  grown (counts since a fixed start) and replaces it; a window starting at or after the pending
  one's end is the next one, and the pending one moves into ``carried``, which is added to every
  window judged until one is judged. A window from another release, or overlapping the pending
  one otherwise, starts afresh (adding it would count requests twice).
- **the end of a step**: :func:`conclude` judges an ``error_rate`` check with a confidence (and a
  latency check from counts) once more over the step's whole data (``judged`` windows, then the
  pooled ones). Below the limit it passes. Otherwise it is compared with the stable release
  over the same windows (``baseline``, fed by :func:`step`; :mod:`nonstop.analysis.compare`):
  worse than stable fails; a stable release itself above the limit is ``inconclusive`` (the
  canary measures on, then pauses for a person); a canary shown above the limit fails; not
  worse passes and says so. With no baseline, still undecided passes only with
  ``undecided = "pass"`` ("not shown above max"), else it is ``inconclusive``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, cast

from nonstop.analysis.compare import compare, usable
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.sequential import SequentialRun, new_sequential, observe_windows
from nonstop.analysis.verdict import Outcome, Verdict, num, window
from nonstop.config.schema import CheckConfig

DEFAULT_INCONCLUSIVE_LIMIT = 6
HISTORY = 50
"""Verdicts kept per check (the most recent); the counts cover every window. Bounded because the
run is journaled on every evaluation, and a long step at a short interval has thousands."""
Phase = Literal["running", "failed", "inconclusive"]


@dataclass(frozen=True, slots=True)
class QueryValue:
    """What a metrics provider answered for a ``query`` check over ``[start, end)``."""

    release: str
    start: float
    end: float
    value: float | None
    error: str | None = None
    """The provider's message when it could not answer (``value`` is then None)."""
    samples: int | None = None
    """Requests behind the value, when the provider knows; None skips the ``min_samples`` test."""

    def to_dict(self) -> dict[str, object]:
        return {
            "release": self.release,
            "start": self.start,
            "end": self.end,
            "value": self.value,
            "error": self.error,
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> QueryValue:
        value, samples, error = data.get("value"), data.get("samples"), data.get("error")
        return cls(
            release=str(data["release"]),
            start=float(cast(float, data["start"])),
            end=float(cast(float, data["end"])),
            value=None if value is None else float(cast(float, value)),
            error=None if error is None else str(error),
            samples=None if samples is None else int(cast(int, samples)),
        )


Observation = Measurement | QueryValue


def check_name(check: CheckConfig) -> str:
    """``error_rate``, ``latency_p99`` (``latency_p99.9``), or ``query``."""
    if check.metric == "latency":
        return f"latency_p{check.percentile:g}"
    return check.metric


def _unit(check: CheckConfig) -> str:
    return "ms" if check.metric == "latency" else ""


def judge(check: CheckConfig, data: Observation, *, role: str = "canary") -> Verdict:
    """One window's verdict for ``check``. ``role`` names the release in the reason."""
    where = f"({role} {data.release}, {window(data.start, data.end)})"
    name = check_name(check)
    if isinstance(data, QueryValue):
        return _judge_query(check, data, name, where)
    if not data.complete:
        reason = (
            f"{name}: incomplete window, it began before the request records kept now (an "
            f"agent restart?); {data.requests} requests counted {where}"
        )
        return _verdict("inconclusive", check, name, reason, None, data.requests, data)
    if data.requests < check.min_samples:
        return _short(check, name, data.requests, f"{data.requests} requests", where, data)
    if check.metric == "error_rate" and check.confidence > 0:
        return _judge_rate(check, data, name, where)
    if counted(check, data):
        return _judge_latency(check, data, name, where)
    value = data.error_rate if check.metric == "error_rate" else data.latency(check.percentile)
    if value is None:
        reason = f"{name}: no latency recorded over {data.requests} requests {where}"
        return _verdict("inconclusive", check, name, reason, None, data.requests, data)
    return _bounds(
        check, name, value, data.requests, f"over {data.requests} requests {where}", data
    )


def rate_bounds(errors: int, requests: int, confidence: float) -> tuple[float, float]:
    """One-sided exact (Clopper-Pearson) ``confidence`` bounds ``(lower, upper)`` on the rate
    behind ``errors`` of ``requests``: a true rate below ``lower`` gives ``errors`` or more with
    probability at most ``1 - confidence``, one above ``upper`` gives ``errors`` or fewer with at
    most that. With no error at all ``upper = 1 - (1 - confidence) ** (1 / requests)``, about
    ``3.0 / requests`` at 95% and ``4.6 / requests`` at 99%.

    >>> [round(b, 6) for b in rate_bounds(1, 1000, 0.95)]  # 1 error: 0.005%..0.47%
    [5.1e-05, 0.004735]
    >>> [round(b, 6) for b in rate_bounds(0, 3000, 0.95)]  # none in 3000: at most 0.0999%
    [0.0, 0.000998]
    """
    if requests <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lower = 0.0 if errors <= 0 else _solve(lambda p: _at_least(errors, requests, p) < alpha)
    if errors >= requests:
        upper = 1.0
    elif errors == 0:
        upper = -math.expm1(math.log(alpha) / requests)
    else:
        upper = _solve(lambda p: _at_most(errors, requests, p) > alpha)
    return lower, upper


def _solve(below: Callable[[float], bool]) -> float:
    """The p in (0, 1) where ``below(p)`` turns from true to false, by bisection (geometric
    while the bracket spans orders of magnitude: rates of 1e-6 matter as much as 0.5)."""
    lo, hi = 1e-12, 1.0
    for _ in range(48):  # about 4 significant digits for rates from 1e-12 up
        mid = math.sqrt(lo * hi) if hi > 4 * lo else (lo + hi) / 2
        if below(mid):
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed from the tail's near end outwards."""
    if k <= 0 or p >= 1.0:
        return 1.0 if k <= n else 0.0
    if k > n or p <= 0.0:
        return 0.0
    if k >= n * p:
        return min(1.0, _sum_pmf(k, n, p, up=True))
    return max(0.0, 1.0 - _sum_pmf(k - 1, n, p, up=False))


def _at_most(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return 1.0 - _at_least(k + 1, n, p)


def _sum_pmf(k: int, n: int, p: float, *, up: bool) -> float:
    """The Binomial(n, p) pmf summed from ``k`` away from the mean (terms only shrink there),
    until they no longer change the sum."""
    log_term = (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    term, total, j, odds = math.exp(log_term), 0.0, k, p / (1.0 - p)
    while 0 <= j <= n and term > 0.0:
        total += term
        if term < total * 1e-17:
            break
        term *= (n - j) / (j + 1) * odds if up else j / (n - j + 1) / odds
        j += 1 if up else -1
    return total


def _judge_rate(check: CheckConfig, data: Measurement, name: str, where: str) -> Verdict:
    """An error rate against its bounds with ``check.confidence`` (see the module doc)."""
    n, k = data.requests, data.errors
    value = k / n
    alpha = 1.0 - check.confidence
    lower, upper = rate_bounds(k, n, check.confidence)
    pct = f"{num(100 * check.confidence)}%"
    shown, over = f"{name} {num(value)}", f"over {n} requests"
    # Decided from the tails at the limit itself (exact); the bounds are what people read.
    if check.max is not None and _at_least(k, n, check.max) < alpha:
        reason = (
            f"{shown} > max {num(check.max)} {over} ({k} errors; lower {pct} bound {num(lower)})"
        )
        return _verdict("fail", check, name, f"{reason} {where}", value, n, data, check.max)
    if check.min is not None and _at_most(k, n, check.min) < alpha:
        reason = (
            f"{shown} < min {num(check.min)} {over} ({k} errors; upper {pct} bound {num(upper)})"
        )
        return _verdict("fail", check, name, f"{reason} {where}", value, n, data, check.min)
    below = check.max is None or _at_most(k, n, check.max) <= alpha
    above = check.min is None or _at_least(k, n, check.min) <= alpha
    if below and above:
        bounds, shown_bounds = [], []
        if check.min is not None:
            bounds.append(f">= min {num(check.min)}")
            shown_bounds.append(f"lower {pct} bound {num(lower)}")
        if check.max is not None:
            bounds.append(f"<= max {num(check.max)}")
            shown_bounds.append(f"upper {pct} bound {num(upper)}")
        reason = f"{shown} {' and '.join(bounds)} {over} ({k} errors; {', '.join(shown_bounds)})"
        return _verdict("pass", check, name, f"{reason} {where}", value, n, data)
    limit = check.max if check.max is not None and not below else check.min
    assert limit is not None
    reason = (
        f"{shown}: not enough data to tell it from the limit {num(limit)} {over} "
        f"({k} errors; {pct} bounds {num(lower)}-{num(upper)}) {where}"
    )
    return _verdict("inconclusive", check, name, reason, value, n, data, limit)


def counted(check: CheckConfig, data: Measurement | None) -> bool:
    """A latency check judged from counts: a ``confidence``, a ``max`` (and no ``min``), and a
    source that counted the requests at or below that ``max``."""
    return (
        check.metric == "latency"
        and check.confidence > 0
        and check.max is not None
        and check.min is None
        and data is not None
        and data.slower_than(check.max) is not None
    )


def _judge_latency(check: CheckConfig, data: Measurement, name: str, where: str) -> Verdict:
    """A percentile against ``max`` from counts (see the module doc): the p-th percentile is
    above ``max`` exactly when more than ``1 - p`` of the requests are slower than ``max``, so
    the slow requests are judged as an error rate against the limit ``1 - p``."""
    assert check.max is not None
    counts = data.slower_than(check.max)
    assert counts is not None
    slow, n = counts
    limit = 1.0 - check.percentile / 100.0
    value = data.latency(check.percentile)
    shown = name if value is None else f"{name} {num(value)}ms"
    if n <= 0:
        reason = f"{name}: no latency recorded over {data.requests} requests {where}"
        return _verdict("inconclusive", check, name, reason, None, data.requests, data)
    alpha = 1.0 - check.confidence
    lower, upper = rate_bounds(slow, n, check.confidence)
    pct = f"{num(100 * check.confidence)}%"
    limit_text = f"max {num(check.max)}ms"
    facts = (
        f"{slow} of {n} requests slower than {num(check.max)}ms ({num(100 * slow / n)}%, "
        f"{pct} bounds {num(100 * lower)}%-{num(100 * upper)}%, against {num(100 * limit)}%)"
    )
    if _at_least(slow, n, limit) < alpha:
        reason = f"{shown} > {limit_text} with {pct} confidence: {facts} {where}"
        return _verdict("fail", check, name, reason, value, n, data)
    if _at_most(slow, n, limit) <= alpha:
        reason = f"{shown} <= {limit_text} with {pct} confidence: {facts} {where}"
        return _verdict("pass", check, name, reason, value, n, data)
    reason = (
        f"{shown}: not enough data to tell it from the limit {num(check.max)}ms: {facts} {where}"
    )
    shown_value = value if value is not None else float(check.max)
    return _verdict("inconclusive", check, name, reason, shown_value, n, data)


def _judge_query(check: CheckConfig, data: QueryValue, name: str, where: str) -> Verdict:
    samples = data.samples or 0
    if data.value is None or math.isnan(data.value):
        why = data.error or (
            "query returned NaN" if data.value is not None else "query returned no data"
        )
        reason = f"{name}: {why} {where}"
        return _verdict("inconclusive", check, name, reason, None, samples, data)
    if data.samples is not None and data.samples < check.min_samples:
        return _short(check, name, data.samples, f"{data.samples} samples", where, data)
    return _bounds(check, name, data.value, samples, where, data)


def _short(
    check: CheckConfig, name: str, samples: int, what: str, where: str, data: Observation
) -> Verdict:
    reason = f"{name}: not enough data, {what} < min_samples {check.min_samples} {where}"
    return _verdict("inconclusive", check, name, reason, None, samples, data)


def _bounds(
    check: CheckConfig, name: str, value: float, samples: int, tail: str, data: Observation
) -> Verdict:
    unit = _unit(check)
    shown = f"{name} {num(value)}{unit}"
    if check.max is not None and value > check.max:
        reason = f"{shown} > max {num(check.max)}{unit} {tail}"
        return _verdict("fail", check, name, reason, value, samples, data, check.max)
    if check.min is not None and value < check.min:
        reason = f"{shown} < min {num(check.min)}{unit} {tail}"
        return _verdict("fail", check, name, reason, value, samples, data, check.min)
    bounds = []
    if check.min is not None:
        bounds.append(f">= min {num(check.min)}{unit}")
    if check.max is not None:
        bounds.append(f"<= max {num(check.max)}{unit}")
    reason = f"{shown} {' and '.join(bounds)} {tail}"
    threshold = check.max if check.max is not None else check.min
    return _verdict("pass", check, name, reason, value, samples, data, threshold)


def _verdict(
    outcome: Outcome,
    check: CheckConfig,
    name: str,
    reason: str,
    value: float | None,
    samples: int,
    data: Observation,
    threshold: float | None = None,
) -> Verdict:
    if threshold is None:
        threshold = check.max if check.max is not None else check.min
    return Verdict(outcome, name, reason, value, threshold, samples, data.start, data.end)


def pool(
    carried: Measurement | None, pending: Measurement | None, new: Measurement
) -> tuple[Measurement | None, Measurement]:
    """``(carried, window to judge)`` when ``new`` arrives after the unjudged ``pending`` window
    and the older unjudged windows ``carried`` before it (see the module doc)."""
    if pending is None or pending.release != new.release or not pending.complete:
        return None, new  # an incomplete window is never pooled: it would taint the next ones
    if new.start == pending.start:  # the pending window, grown
        return carried, merge(carried, new)
    if new.start >= pending.end:  # the next window
        carried = merge(carried, pending)
        return carried, merge(carried, new)
    return None, new


def merge(first: Measurement | None, then: Measurement) -> Measurement:
    """Two windows of one release as one: counts add, percentiles take the higher."""
    if first is None:
        return then
    status = dict(first.status)
    for cls, count in then.status.items():
        status[cls] = status.get(cls, 0) + count
    latency = dict(first.latency_ms)
    for p, ms in then.latency_ms.items():
        latency[p] = max(ms, latency.get(p, ms))
    # Counts add exactly, for the bounds both parts were counted at.
    le = {b: n + then.latency_le[b] for b, n in first.latency_le.items() if b in then.latency_le}
    return Measurement(
        release=then.release,
        start=first.start,
        end=then.end,
        requests=first.requests + then.requests,
        status=status,
        proxy_errors=first.proxy_errors + then.proxy_errors,
        latency_ms=latency,
        complete=first.complete and then.complete,
        latency_le=le,
    )


@dataclass(frozen=True, slots=True)
class CheckRun:
    """One check's history within an analysis run."""

    check: CheckConfig
    verdicts: tuple[Verdict, ...] = ()
    """The most recent :data:`HISTORY` windows' verdicts, oldest first."""
    passed: int = 0
    failed: int = 0
    inconclusive: int = 0
    inconclusive_streak: int = 0
    pending: Measurement | None = None
    """The last window, when it was too small to judge (see pooling in the module doc)."""
    carried: Measurement | None = None
    """Older windows too small to judge, added to each window judged until one is judged."""
    judged: Measurement | None = None
    """Every window judged so far, pooled: with ``carried`` and ``pending`` the check's whole
    data, which :func:`conclude` judges once more at the end of a step."""
    baseline: Measurement | None = None
    """The stable release over the same windows, pooled: what :func:`conclude` compares an
    undecided check with."""
    phase: Phase = "running"

    @property
    def name(self) -> str:
        return check_name(self.check)

    @property
    def last(self) -> Verdict | None:
        return self.verdicts[-1] if self.verdicts else None

    @property
    def whole(self) -> Measurement | None:
        """All the check's Measurement data: judged windows, then the unjudged ones."""
        parts = [m for m in (self.judged, self.carried, self.pending) if m is not None]
        whole = None
        for part in parts:
            whole = part if whole is None else _add_judged(whole, part)
        return whole

    def to_dict(self) -> dict[str, object]:
        return {
            "check": self.check.model_dump(mode="json", exclude_none=True),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "passed": self.passed,
            "failed": self.failed,
            "inconclusive": self.inconclusive,
            "inconclusive_streak": self.inconclusive_streak,
            "pending": None if self.pending is None else self.pending.to_dict(),
            "carried": None if self.carried is None else self.carried.to_dict(),
            "judged": None if self.judged is None else self.judged.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "phase": self.phase,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CheckRun:
        pending, carried = data.get("pending"), data.get("carried")
        verdicts = cast(Sequence[Mapping[str, object]], data.get("verdicts", ()))
        return cls(
            check=CheckConfig.model_validate(data["check"]),
            verdicts=tuple(Verdict.from_dict(v) for v in verdicts),
            passed=int(cast(int, data.get("passed", 0))),
            failed=int(cast(int, data.get("failed", 0))),
            inconclusive=int(cast(int, data.get("inconclusive", 0))),
            inconclusive_streak=int(cast(int, data.get("inconclusive_streak", 0))),
            pending=_measurement(pending),
            carried=_measurement(carried),
            judged=_measurement(data.get("judged")),
            baseline=_measurement(data.get("baseline")),
            phase=cast(Phase, str(data.get("phase", "running"))),
        )


def _measurement(data: object) -> Measurement | None:
    return None if data is None else Measurement.from_dict(cast(Mapping[str, object], data))


@dataclass(frozen=True, slots=True)
class AnalysisRun:
    """Every check of one analysis (a canary step, or the whole rollout) as plain data.

    Build with :func:`new_run`, advance with :func:`step` (and
    :func:`nonstop.analysis.sequential.step_sequential`), decide with :attr:`phase` while it runs
    and :func:`conclude` when its step ends.
    """

    checks: tuple[CheckRun, ...] = ()
    inconclusive_limit: int = DEFAULT_INCONCLUSIVE_LIMIT
    sequential: SequentialRun | None = field(default=None)

    @property
    def phase(self) -> Phase:
        """``failed`` if any check (or the sequential test) failed, else ``inconclusive`` if any
        check hit its inconclusive streak, else ``running``."""
        phases = {c.phase for c in self.checks}
        if "failed" in phases or (self.sequential is not None and self.sequential.rejected):
            return "failed"
        return "inconclusive" if "inconclusive" in phases else "running"

    def find(self, check: CheckConfig) -> CheckRun | None:
        return next((c for c in self.checks if c.check == check), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "checks": [c.to_dict() for c in self.checks],
            "inconclusive_limit": self.inconclusive_limit,
            "sequential": None if self.sequential is None else self.sequential.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AnalysisRun:
        checks = cast(Sequence[Mapping[str, object]], data.get("checks", ()))
        sequential = data.get("sequential")
        return cls(
            checks=tuple(CheckRun.from_dict(c) for c in checks),
            inconclusive_limit=int(
                cast(int, data.get("inconclusive_limit", DEFAULT_INCONCLUSIVE_LIMIT))
            ),
            sequential=None
            if sequential is None
            else SequentialRun.from_dict(cast(Mapping[str, object], sequential)),
        )


def new_run(
    checks: Iterable[CheckConfig],
    *,
    inconclusive_limit: int = DEFAULT_INCONCLUSIVE_LIMIT,
    sequential: SequentialRun | None = None,
) -> AnalysisRun:
    """A run with nothing measured yet. Identical checks are one check."""
    if inconclusive_limit < 1:
        raise ValueError(f"inconclusive_limit must be >= 1, got {inconclusive_limit}")
    unique: list[CheckConfig] = []
    for check in checks:
        if check not in unique:
            unique.append(check)
    return AnalysisRun(tuple(CheckRun(c) for c in unique), inconclusive_limit, sequential)


def step(
    run: AnalysisRun,
    check: CheckConfig,
    new: Observation,
    *,
    role: str = "canary",
    baseline: Measurement | None = None,
) -> tuple[AnalysisRun, Verdict]:
    """Fold one window of ``check``'s data into ``run``; return the new run and that window's
    verdict. Whether the *analysis* failed is ``run.phase`` (see the module doc): with
    ``failure_limit = 2`` a first failing window returns ``fail`` while the phase stays
    ``running``. A check that already failed or turned inconclusive keeps that phase; later
    windows are still recorded, for the record. ``baseline`` is the stable release's
    Measurement of the same window; it pools into ``CheckRun.baseline`` for :func:`conclude`."""
    current = run.find(check) or CheckRun(check)
    data: Observation = new
    carried, pending = None, None
    if isinstance(new, Measurement):
        carried, data = pool(current.carried, current.pending, new)
    verdict = judge(check, data, role=role)
    judged = current.judged
    if verdict.outcome == "inconclusive" and isinstance(new, Measurement):
        pending = new
    else:
        carried = None
        if isinstance(data, Measurement):
            judged = _add_judged(judged, data)
    pooled = current.baseline
    if baseline is not None and isinstance(new, Measurement):
        pooled = _add_judged(pooled, baseline)
    updated = replace(
        _count(current, verdict, pending, carried, run.inconclusive_limit),
        judged=judged,
        baseline=pooled,
    )
    if run.find(check) is None:
        checks = (*run.checks, updated)
    else:
        checks = tuple(updated if c.check == check else c for c in run.checks)
    return replace(run, checks=checks), verdict


def _add_judged(judged: Measurement | None, data: Measurement) -> Measurement:
    """``judged`` and the window ``data`` just judged, without counting a request twice: a
    window overlapping what was judged (a cumulative feed) replaces it when it covers it."""
    if judged is None or data.release != judged.release:
        return data
    if data.start >= judged.end:
        return merge(judged, data)
    return data if data.start <= judged.start else judged


def undecided(verdict: Verdict) -> bool:
    """An inconclusive verdict that had data (a value) but could not tell it from the limit:
    it pools like a thin window but does not count towards ``inconclusive_limit``, which is
    about data that does not come."""
    return verdict.outcome == "inconclusive" and verdict.value is not None


def _count(
    current: CheckRun,
    verdict: Verdict,
    pending: Measurement | None,
    carried: Measurement | None,
    inconclusive_limit: int,
) -> CheckRun:
    passed, failed, inconclusive = current.passed, current.failed, current.inconclusive
    streak = current.inconclusive_streak
    if undecided(verdict):
        inconclusive, streak = inconclusive + 1, 0
    elif verdict.outcome == "inconclusive":
        inconclusive, streak = inconclusive + 1, streak + 1
    elif verdict.outcome == "fail":
        failed, streak = failed + 1, 0
    else:
        passed, streak = passed + 1, 0
    phase = current.phase
    if phase == "running" and failed >= current.check.failure_limit:
        phase = "failed"
    elif phase == "running" and streak >= inconclusive_limit:
        phase = "inconclusive"
    return replace(
        current,
        verdicts=(*current.verdicts, verdict)[-HISTORY:],
        passed=passed,
        failed=failed,
        inconclusive=inconclusive,
        inconclusive_streak=streak,
        pending=pending,
        carried=carried,
        phase=phase,
    )


def conclude(run: AnalysisRun) -> Verdict:
    """The analysis' verdict when its step's time is up.

    ``fail`` if any check failed (or the sequential test rejected); ``inconclusive`` if a check
    turned inconclusive or never judged a single window (it had data too thin all along);
    ``pass`` when every check judged at least one window and none failed.

    An ``error_rate`` check with a ``confidence`` is judged once more over its whole data (every
    window of the step, judged or pooled): it passes only if that passes. Still undecided, or
    above ``max`` with confidence while under ``failure_limit``, it is ``inconclusive`` and the
    canary waits, then pauses for a person; it never passes or fails on a guess.
    """
    for c in run.checks:
        if c.phase == "failed":
            return _summary(
                "fail",
                c,
                f"{c.name} failed {c.failed} of {c.failed + c.passed} "
                f"judged windows (failure_limit {c.check.failure_limit})",
            )
    if run.sequential is not None and run.sequential.rejected and run.sequential.last is not None:
        return run.sequential.last
    notes: list[str] = []
    for c in run.checks:
        if c.pending is not None and not c.pending.complete:
            # Earlier passes say nothing about a window nobody saw whole (an agent restart).
            return _summary("inconclusive", c, f"{c.name}: its last window was incomplete")
        if c.phase == "inconclusive":
            return _summary(
                "inconclusive",
                c,
                f"{c.name} was inconclusive {c.inconclusive_streak} "
                f"windows in a row (inconclusive_limit {run.inconclusive_limit})",
            )
        if _bounded(c.check, c.whole):
            whole = _conclude_whole(c)
            if whole.outcome != "pass":
                return whole
            if whole.reason:
                notes.append(whole.reason)
        elif c.passed == 0:
            return _summary("inconclusive", c, _never_passed(c))
    judged = sum(c.passed for c in run.checks)
    names = ", ".join(c.name for c in run.checks) or "no checks"
    reason = "; ".join([f"{names}: passed {judged} judged windows", *notes])
    return Verdict("pass", "analysis", reason, samples=judged)


def _bounded(check: CheckConfig, whole: Measurement | None) -> bool:
    if check.metric == "error_rate":
        return check.confidence > 0
    return counted(check, whole)


def _bad(check: CheckConfig, data: Measurement) -> tuple[int, int] | None:
    """``(bad requests, requests)`` a bounded check counts: errors, or requests slower than
    the latency ``max``."""
    if check.metric == "error_rate":
        return data.errors, data.requests
    return data.slower_than(check.max) if check.max is not None else None


def _conclude_whole(c: CheckRun) -> Verdict:
    """The check's whole data judged once more: ``pass`` (with an empty reason when it passed
    outright, or a note saying why it passes anyway), ``fail``, or ``inconclusive`` with why the
    step cannot pass yet.

    Not shown below its limit (undecided, or shown above it with fewer failing windows than
    ``failure_limit``), the canary is compared with the stable release over the same windows
    (``baseline``, :mod:`nonstop.analysis.compare`), at the check's confidence:

    1. worse than stable: ``fail``;
    2. the stable release itself above the limit with that confidence: ``inconclusive`` (the
       rollout pauses for a person: the service is bad, the canary is not shown to be why;
       with ``undecided = "pass"`` an undecided check passes, saying so);
    3. the canary shown above the limit: ``fail``;
    4. undecided and not worse than stable: ``pass``, and the reason says so.

    Without a usable baseline (no stable requests, an incomplete window) an undecided check is
    ``inconclusive`` (``undecided = "pass"``: passes, "not shown above max") and one shown above
    its limit is ``inconclusive`` too, as before there was a comparison."""
    whole = c.whole
    if whole is None:
        return _summary("inconclusive", c, f"{c.name} was never measured")
    verdict = judge(c.check, whole)
    if verdict.outcome == "pass":
        return replace(verdict, reason="")
    if verdict.outcome == "inconclusive" and not undecided(verdict):
        reason = f"{c.name} over the whole step is undecided: {verdict.reason}"
        return replace(verdict, reason=reason)
    baseline = c.baseline
    canary_counts = _bad(c.check, whole)
    stable_counts = _bad(c.check, baseline) if baseline is not None and usable(baseline) else None
    if baseline is not None and canary_counts is not None and stable_counts is not None:
        what = (
            "errors" if c.check.metric == "error_rate" else f"slower than {num(c.check.max or 0)}ms"
        )
        span = window(whole.start, whole.end)
        where = f"(canary {whole.release} vs stable {baseline.release}, {span})"
        compared = compare(c.name, what, canary_counts, stable_counts, c.check.confidence, where)
        if compared.outcome == "fail":
            return replace(compared, reason=f"{compared.reason}; the canary: {verdict.reason}")
        stable = judge(c.check, baseline, role="stable")
        if stable.outcome == "fail" and c.check.undecided == "pass" and undecided(verdict):
            reason = (
                f'{c.name} not shown above max, passed as undecided = "pass"; the stable '
                f"release is above the limit too ({stable.reason}): {verdict.reason}"
            )
            return replace(verdict, outcome="pass", reason=reason)
        if stable.outcome == "fail":
            reason = (
                f"{c.name}: the stable release itself is above the limit ({stable.reason}); "
                f"the canary is not shown to be why: {compared.reason}"
            )
            return replace(verdict, outcome="inconclusive", reason=reason)
        if verdict.outcome == "fail":
            return replace(verdict, reason=f"{c.name} over the whole step: {verdict.reason}")
        reason = (
            f"{c.name} not shown below the limit but {compared.reason.split(': ', 1)[1]}; "
            f"the canary: {verdict.reason}"
        )
        return replace(verdict, outcome="pass", reason=reason)
    if undecided(verdict) and c.check.undecided == "pass" and verdict.threshold == c.check.max:
        reason = f'{c.name} not shown above max, passed as undecided = "pass": {verdict.reason}'
        return replace(verdict, outcome="pass", reason=reason)
    reason = f"{c.name} over the whole step is undecided: {verdict.reason}"
    return replace(verdict, outcome="inconclusive", reason=reason)


def _never_passed(c: CheckRun) -> str:
    if not c.verdicts:
        return f"{c.name} was never measured"
    if c.failed:
        return (
            f"{c.name} had no passing window ({c.failed} failed, below failure_limit "
            f"{c.check.failure_limit}; {c.inconclusive} inconclusive)"
        )
    return f"{c.name} never had enough data to judge ({c.inconclusive} inconclusive windows)"


def _summary(outcome: Outcome, c: CheckRun, head: str) -> Verdict:
    last = c.last
    tail = f"; last: {last.reason}" if last is not None else ""
    value = last.value if last is not None else None
    samples = last.samples if last is not None else 0
    threshold = c.check.max if c.check.max is not None else c.check.min
    return Verdict(outcome, c.name, head + tail, value, threshold, samples)


def step_sequential(
    run: AnalysisRun, canary: Measurement, stable: Measurement
) -> tuple[AnalysisRun, Verdict]:
    """Feed the sequential test (started on first use with the default alpha and grid) the
    canary's and the stable release's Measurements of one window; see
    :mod:`nonstop.analysis.sequential`. A rejection makes ``run.phase`` ``failed``."""
    sequential, verdict = observe_windows(run.sequential or new_sequential(), canary, stable)
    return replace(run, sequential=sequential), verdict
