"""The router's request stream folded into per-release Measurements.

Each release keeps a ring of per-second buckets (15 minutes by default): counts by status class,
the router's own errors, and an HdrHistogram of latency. ``snapshot(release, since, until)`` adds
up the buckets of the seconds that overlap ``[since, until)``, so a window "since this step
started" is answered without keeping every request. Beside the ring, cumulative counters feed
the Prometheus exposition (drivers/metrics/prometheus.py).

Worked example: events for release v2 at t=100.2 (200, 1 ms), t=100.7 (200, 3 ms) and t=101.5
(502 from the router itself, 0.1 ms)::

    snapshot("v2", since=100.0, until=102.0)
    -> requests 3, status {"2xx": 2, "5xx": 1}, proxy_errors 1, start 100, end 102

Window edges snap outward to whole seconds: since=100.5 still takes the whole second 100.

Latency is recorded in microseconds, 1 µs to 10 min (longer is clamped to 10 min), with 2
significant digits: a percentile is at most 1 % above the true value (HdrHistogram reports the
highest value equivalent to the bucket). Two digits rather than three keeps a second's histogram
near 13 KB instead of 85 KB: a release with traffic in every one of the 900 seconds holds about
12 MB (measured). Seconds without traffic hold nothing. A sparse per-second histogram was
measured too: at 500 requests/s with spread-out latencies it took more memory (17 MB) and made
a 15-minute snapshot ten times slower (210 ms against 18 ms).

Responses no upstream answered. When the router tried an upstream, its event names it and the
request is that upstream's release's. When it tried none (an empty pool, a static 503), the
request is charged to the release(s) meant to serve at that moment, from the weights the engine
hands in (:meth:`RequestStats.observe_weights`): every response sent while a release should
serve counts for it. With several releases weighted, each such request goes to one of them in
proportion to weight, deterministically, by smooth weighted round robin (the algorithm nginx
uses for upstreams): with ``{v1: 75, v2: 25}`` four unrouted requests are charged v1, v1, v2,
v1 - always 3 to 1, never a coin flip. Before any weights are known they go to ``(unrouted)``.

Latency counts. :meth:`RequestStats.count_latency_at` names latencies (a latency check's
``max``, in ms) at which every snapshot also counts the requests that took at most that long
(``Measurement.latency_le``, and ``inf``: every request), so analysis judges "p99 <= 500 ms" as
"at most 1% of n requests were slower than 500 ms" with binomial confidence. Counted from the
same histograms, so at their resolution: a request in the bucket holding the bound (within 1%
of it) counts as slower unless the whole bucket is at or below the bound, which errs towards
failing, as the percentiles do.

Completeness. A window that began before this object started recording (an agent restart) or
before the oldest second the ring still keeps is returned with ``complete=False``: analysis
judges it inconclusive, never a pass. The ring holds ``window`` seconds (15 minutes by
default); :meth:`RequestStats.retain` grows it to the longest window a configuration needs, up
to :data:`MAX_WINDOW` (an hour: about 50 MB per release at full traffic in every second).

Upgraded streams. A WebSocket (any ``101 Switching Protocols``) reaches the stream once, when
it ends: the router logs it at its close, with the whole connection's life as its duration.
Folded as a request it would be wrong three ways: a client that stayed 40 s is a 40 s
"latency" (a p99 check fails the release that serves it), its close counts as traffic at the
moment it closes (a blue-green watch that began while the previous release's clients were
still open saw them close after its drain deadline, and judged "no request reached v2 while
the service answered 30"), and the close of a healthy release's clients, moved on purpose,
reads as that release's activity. So a stream is counted apart (``ReleaseTotals.streams``,
``streams`` in a snapshot) and is not a request: not in ``requests``, status classes,
latencies or :meth:`RequestStats.requests`. A failed upgrade is not a 101 (the router's 502,
the app's 4xx/5xx) and counts as a request like any other. Decision 0510.

Cost per event: a dict lookup or two, a list index and an HdrHistogram record (pure Python,
a few microseconds): 500 requests per second is well under 1 % of a core.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from nonstop.analysis.measurement import PERCENTILES, Measurement
from nonstop.drivers.router.base import RequestEvent, RouteTable

UNROUTED = "(unrouted)"
"""Release name for requests no upstream answered (the router's own 502/503/504)."""
SWITCHING_PROTOCOLS = 101
"""An upgraded connection (WebSocket): one event when it ends, never a request."""
UNKNOWN = "(unknown)"
"""Release name for an upstream address no route table has named."""

HIGHEST_US = 600_000_000
SIGNIFICANT_DIGITS = 2
DEFAULT_WINDOW = 900
MAX_WINDOW = 3600
"""The longest ring :meth:`RequestStats.retain` grows to, whatever the configuration asks."""
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Prometheus histogram bounds in seconds (the client library's defaults)."""


def status_class(status: int) -> str:
    """200 -> "2xx"; anything outside 100..599 (e.g. 0 for a client that went away) -> "other"."""
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, SIGNIFICANT_DIGITS, word_size=4)


def at_most(hist: HdrHistogram, bound_ms: float) -> int:
    """Requests recorded in ``hist`` that took at most ``bound_ms``: the buckets whose every
    value is at or below it (the bucket holding the bound counts only when its highest value
    is, so a request within the histogram's 1% of the bound counts as slower)."""
    bound_us = int(bound_ms * 1000.0)
    index = hist.get_counts_array_index(bound_us)
    if hist.get_highest_equivalent_value(bound_us) <= bound_us:
        index += 1
    return int(sum(hist.counts[: min(index, hist.counts_len)]))


def percentiles_us(hist: HdrHistogram, wanted: tuple[float, ...]) -> list[int]:
    """``wanted`` percentiles of ``hist``: the values HdrHistogram's
    ``get_percentile_to_value_dict`` gives, found by walking only the buckets between the
    smallest and the largest value recorded (a second's histogram has ~3,000 buckets, most of
    them empty: the library's walk of all of them made a 15-minute chart take a second)."""
    if not hist.get_total_count():
        return [0 for _ in wanted]
    first = 0 if hist.counts[0] else hist.get_counts_array_index(hist.min_value)
    last = min(hist.get_counts_array_index(hist.max_value), hist.counts_len - 1)
    cumulative = list(itertools.accumulate(hist.counts[first : last + 1]))
    found = []
    for percentile in wanted:
        index = bisect.bisect_left(cumulative, hist.get_target_count_at_percentile(percentile))
        value = hist.get_value_from_index(first + min(index, len(cumulative) - 1))
        found.append(int(hist.get_highest_equivalent_value(value)))
    return found


@dataclass(frozen=True, slots=True)
class SecondPoint:
    """One second of one release: requests, 5xx among them, latency percentiles in ms."""

    second: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float


class _Second:
    __slots__ = ("hist", "proxy_errors", "requests", "second", "status", "streams")

    def __init__(self, second: int) -> None:
        self.second = second
        self.requests = 0
        self.streams = 0
        self.proxy_errors = 0
        self.status: dict[str, int] = {}
        self.hist = new_histogram()


@dataclass(slots=True)
class ReleaseTotals:
    """Everything since the process started, for Prometheus counters."""

    status: dict[str, int] = field(default_factory=dict)
    proxy_errors: int = 0
    buckets: list[int] = field(default_factory=list)
    """Non-cumulative counts per bound of ``DEFAULT_BUCKETS``, plus one for +Inf."""
    duration_sum: float = 0.0
    streams: int = 0
    """Upgraded connections (101) that ended: not requests (see the module docstring)."""


class _Series:
    __slots__ = ("ring", "totals")

    def __init__(self, window: int, n_buckets: int) -> None:
        self.ring: list[_Second | None] = [None] * window
        self.totals = ReleaseTotals(buckets=[0] * (n_buckets + 1))

    def window_slots(self, first: int, end: int) -> list[_Second]:
        """The buckets holding seconds ``first .. end - 1`` (seconds without traffic have none)."""
        size = len(self.ring)
        slots = (self.ring[second % size] for second in range(first, end))
        return [slot for slot in slots if slot is not None and first <= slot.second < end]


class RequestStats:
    """Folds RequestEvents into per-release counters; see the module docstring."""

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 second, got {window}")
        self.window = window
        self._clock = clock
        self.started_at = clock()
        """Epoch seconds this object started recording: a window before it is incomplete."""
        self.complete_since = self.started_at
        """A window starting earlier is incomplete: recording started, or a smaller ring had
        already let go of older seconds when :meth:`retain` grew it."""
        self.buckets = tuple(sorted(buckets))
        self.stale = 0
        """Events older than the ring (kept in the totals, missing from snapshots)."""
        self._release_of: dict[str, str] = {}
        self._series: dict[str, _Series] = {}
        self._weights: dict[str, int] = {}
        self._credit: dict[str, int] = {}
        self.latency_bounds: tuple[float, ...] = ()
        """Latencies (ms) each snapshot counts the requests at or below (``latency_le``)."""

    # -- feeding -------------------------------------------------------------------------------

    def observe_table(self, table: RouteTable) -> None:
        """Learn address -> release from a route table. Addresses that leave the table keep their
        release, so requests still draining from them are counted where they belong."""
        for upstream in table.upstreams:
            self._release_of[upstream.address] = upstream.release

    def observe_weights(self, weights: Mapping[str, int] | None) -> None:
        """The releases meant to serve now, with their percent: requests the router answers
        without trying an upstream are charged to them (see the module docstring). ``None`` or
        an empty map: nobody is meant to serve, such requests stay ``(unrouted)``."""
        wanted = {r: int(w) for r, w in (weights or {}).items() if w > 0}
        if wanted != self._weights:
            self._weights = wanted
            self._credit = dict.fromkeys(wanted, 0)

    def release_of(self, address: str | None) -> str:
        if address is None:
            return UNROUTED
        return self._release_of.get(address, UNKNOWN)

    def _charge_unrouted(self) -> str:
        """Smooth weighted round robin over the weights: each pick adds every weight to its
        credit, takes the highest credit (first in name order on a tie) and subtracts the
        total from it, so any run of ``total`` picks matches the weights exactly."""
        if not self._weights:
            return UNROUTED
        credit = self._credit
        for release, weight in self._weights.items():
            credit[release] += weight
        chosen = max(sorted(credit), key=lambda r: credit[r])
        credit[chosen] -= sum(self._weights.values())
        return chosen

    def count_latency_at(self, bounds_ms: Iterable[float]) -> None:
        """Count, in every snapshot, the requests that took at most each of ``bounds_ms``
        (positive, finite; others are ignored)."""
        self.latency_bounds = tuple(
            sorted({float(b) for b in bounds_ms if 0 < b < HIGHEST_US / 1000})
        )

    def retain(self, seconds: float) -> None:
        """Keep at least ``seconds`` of history (at most :data:`MAX_WINDOW`); never shrinks."""
        wanted = min(MAX_WINDOW, math.ceil(seconds))
        if wanted <= self.window:
            return
        self.complete_since = max(self.complete_since, self._clock() - self.window)
        for series in self._series.values():
            ring: list[_Second | None] = [None] * wanted
            for slot in series.ring:
                if slot is not None:
                    ring[slot.second % wanted] = slot
            series.ring = ring
        self.window = wanted

    def record(self, event: RequestEvent) -> None:
        if event.upstream is None:
            release = self._charge_unrouted()
        else:
            release = self.release_of(event.upstream)
        series = self._series.get(release)
        if series is None:
            series = self._series[release] = _Series(self.window, len(self.buckets))
        if event.status == SWITCHING_PROTOCOLS:
            self._record_stream(series, event)
            return
        cls = status_class(event.status)
        totals = series.totals
        totals.status[cls] = totals.status.get(cls, 0) + 1
        totals.proxy_errors += event.proxy_error
        seconds = event.duration_ms / 1000.0
        totals.buckets[bisect.bisect_left(self.buckets, seconds)] += 1
        totals.duration_sum += seconds

        slot = self._slot(series, math.floor(event.ts))
        if slot is None:
            return
        slot.requests += 1
        slot.status[cls] = slot.status.get(cls, 0) + 1
        slot.proxy_errors += event.proxy_error
        slot.hist.record_value(min(max(int(event.duration_ms * 1000.0), 0), HIGHEST_US))

    def _record_stream(self, series: _Series, event: RequestEvent) -> None:
        """An upgraded connection that ended: counted apart, never a request."""
        series.totals.streams += 1
        slot = self._slot(series, math.floor(event.ts))
        if slot is not None:
            slot.streams += 1

    def _slot(self, series: _Series, second: int) -> _Second | None:
        """The ring bucket of ``second`` (a fresh one when the slot held an older second), or
        None when a newer second already took the slot: too old for the ring."""
        index = second % self.window
        slot = series.ring[index]
        if slot is None or slot.second < second:
            slot = series.ring[index] = _Second(second)
        elif slot.second > second:
            self.stale += 1
            return None
        return slot

    async def consume(self, events: AsyncIterable[RequestEvent]) -> None:
        """Record every event of a stream (``router.events()``) until it ends or is cancelled."""
        async for event in events:
            self.record(event)

    # -- reading -------------------------------------------------------------------------------

    def releases(self) -> list[str]:
        return sorted(self._series)

    def totals(self) -> dict[str, ReleaseTotals]:
        return {release: series.totals for release, series in list(self._series.items())}

    def snapshot(self, release: str, since: float, until: float) -> Measurement:
        """Counts and latency percentiles for ``release`` over the seconds overlapping
        ``[since, until)``; only the last ``window`` seconds before ``until`` are kept, and a
        window reaching before them or before :attr:`started_at` is ``complete=False``."""
        first, end = math.floor(since), math.ceil(until)
        complete = since >= self.complete_since and first >= end - self.window
        first = max(first, end - self.window)
        series = self._series.get(release)
        slots = series.window_slots(first, end) if series is not None else []
        status: dict[str, int] = {}
        merged = new_histogram()
        for slot in slots:
            for cls, count in slot.status.items():
                status[cls] = status.get(cls, 0) + count
            merged.add(slot.hist)
        latency: dict[float, float] = {}
        le: dict[float, int] = {}
        if merged.get_total_count():
            values = merged.get_percentile_to_value_dict(list(PERCENTILES))
            latency = {p: values[p] / 1000.0 for p in PERCENTILES}
        if self.latency_bounds:
            le = {bound: at_most(merged, bound) for bound in self.latency_bounds}
            le[math.inf] = merged.get_total_count()
        return Measurement(
            release=release,
            start=float(first),
            end=float(end),
            requests=sum(slot.requests for slot in slots),
            status=status,
            proxy_errors=sum(slot.proxy_errors for slot in slots),
            latency_ms=latency,
            complete=complete,
            latency_le=le,
            streams=sum(slot.streams for slot in slots),
        )

    def counts(self, since: float, until: float) -> dict[str, int]:
        """Requests per release over the seconds overlapping ``[since, until)``, as
        :meth:`snapshot` counts them, without its latency work (releases with none left out)."""
        first, end = math.floor(since), math.ceil(until)
        first = max(first, end - self.window)
        found = {
            release: sum(slot.requests for slot in series.window_slots(first, end))
            for release, series in list(self._series.items())
        }
        return {release: n for release, n in found.items() if n}

    def seconds(self, release: str, since: float, until: float) -> list[SecondPoint]:
        """One point per second of ``release`` with traffic in ``[since, until)``, oldest
        first, from the ring (charts: the dashboard's request rate, errors and p50/p99)."""
        first, end = math.floor(since), math.ceil(until)
        series = self._series.get(release)
        slots = series.window_slots(max(first, end - self.window), end) if series else []
        points = []
        for slot in sorted(slots, key=lambda s: s.second):
            p50, p99 = percentiles_us(slot.hist, (50.0, 99.0))
            errors = slot.status.get("5xx", 0)
            points.append(SecondPoint(slot.second, slot.requests, errors, p50 / 1e3, p99 / 1e3))
        return points

    def requests(self, since: float, until: float) -> int:
        """Every request over the seconds from ``since`` on (the first whole second at or after
        it) to ``until``, whichever release it was charged to (``(unrouted)`` and ``(unknown)``
        included): the service's traffic.

        Unlike :meth:`snapshot` the start snaps *inward*: this is what a release is compared
        with ("the service answered 20, the release none"), and the second a switch happened in
        still holds requests the old release served before it: with a 1 s watch right after a
        switch, snapping outward counted up to a second of the old release's load against the
        new one. Worked example: requests at 100.2, 100.7, 101.5; ``requests(100.5, 102)`` -> 1
        (second 101 only)."""
        first, end = math.ceil(since), math.ceil(until)
        first = max(first, end - self.window)
        return sum(
            slot.requests
            for series in list(self._series.values())
            for slot in series.window_slots(first, end)
        )
