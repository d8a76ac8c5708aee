"""Per-release measurements and query-check values from a Prometheus server.

:class:`PrometheusProvider` asks ``/api/v1/query`` (an instant query at ``time=until``) with
PromQL templates whose placeholders are filled in:

- ``{release}``: the release name (inside a label matcher, so ``"`` and ``\\`` are escaped);
- ``{window}``: the window ``until - since`` in whole seconds, e.g. ``30s`` (at least ``1s``);
- ``{quantile}`` (latency templates only): 0.5, 0.9, 0.95 or 0.99.

Default queries (the sample app's and most HTTP exporters' metric names)::

    requests  sum by (status) (increase(http_requests_total{release="{release}"}[{window}]))
    latency   histogram_quantile({quantile}, sum by (le)
                (rate(http_request_duration_seconds_bucket{release="{release}"}[{window}])))

With the default latency query the provider also asks for the histogram's bucket counts::

    buckets   sum by (le) (increase(
                http_request_duration_seconds_bucket{release="{release}"}[{window}]))

and hands them in as ``Measurement.latency_le`` (requests at or below each ``le``, in ms, and
``inf``): a latency check whose ``max`` is one of the bucket bounds (the client libraries'
defaults include 500 ms and 1 s) is then judged from counts with its confidence, like the
router's stream; any other ``max`` is compared with ``histogram_quantile`` as measured (a bound
between two buckets would have to be guessed by interpolation). No bucket answer only means no
counts: the measurement stands.

The requests query gives the count per status code; they are added up into status classes
(``5xx`` are the errors). ``[metrics] error_rate_query`` replaces the error count with
``round(error_rate * requests)``; ``[metrics] latency_query`` replaces the latency query (its
value in seconds; without ``{quantile}`` it is taken as the p99). ``increase()`` extrapolates to
the window's edges, so counts are rounded to whole requests and are close to, not exactly, what
the application served.

Nothing here raises on a Prometheus problem. An unreachable server, an HTTP error, a query
Prometheus rejects (its own message is kept) or an empty answer becomes a reason: a
:class:`QueryValue` with ``error`` set (the check is ``inconclusive`` with that reason), or a
Measurement with 0 requests (no check can pass on it) beside the reason.

The engine's tick is synchronous for measurements, so :class:`PrometheusSource` adapts the
provider to the engine's MeasurementSource: a poller asks Prometheus about every
``(release, since)`` and query the engine asked for in the last few seconds, about once a second,
and ``snapshot()`` answers from the latest result (docs/decisions/0280-prometheus-poller.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from nonstop.analysis.checks import QueryValue
from nonstop.analysis.measurement import Measurement
from nonstop.drivers.router.base import RouteTable
from nonstop.errors import explain

REQUESTS_QUERY = 'sum by (status) (increase(http_requests_total{release="{release}"}[{window}]))'
LATENCY_QUERY = (
    "histogram_quantile({quantile}, sum by (le) "
    '(rate(http_request_duration_seconds_bucket{release="{release}"}[{window}])))'
)
BUCKETS_QUERY = (
    'sum by (le) (increase(http_request_duration_seconds_bucket{release="{release}"}[{window}]))'
)
QUANTILES = (50.0, 90.0, 95.0, 99.0)
"""Latency percentiles asked for (the sample app's buckets make finer ones meaningless)."""


class PrometheusError(Exception):
    """One sentence saying why Prometheus gave no usable answer (becomes a check's reason)."""


def fill(template: str, release: str, since: float, until: float, quantile: float = 0.99) -> str:
    """The template with its placeholders filled in.

    >>> fill('rate(x{release="{release}"}[{window}])', "v2", 100.0, 130.4)
    'rate(x{release="v2"}[30s])'
    """
    escaped = release.replace("\\", "\\\\").replace('"', '\\"')
    return (
        template.replace("{release}", escaped)
        .replace("{window}", window_text(since, until))
        .replace("{quantile}", f"{quantile:g}")
    )


def window_text(since: float, until: float) -> str:
    """``until - since`` as a PromQL duration in whole seconds, at least ``1s``."""
    return f"{max(1, round(until - since))}s"


def status_class(code: str) -> str | None:
    """``"503"`` -> ``"5xx"``; None for what is not an HTTP status."""
    return f"{code[0]}xx" if len(code) == 3 and code.isdigit() and code[0] in "2345" else None


@dataclass(frozen=True, slots=True)
class Sample:
    labels: Mapping[str, str]
    value: float


class PrometheusProvider:
    """Ask one Prometheus server; see the module doc for the queries."""

    def __init__(
        self,
        url: str,
        error_rate_query: str | None = None,
        latency_query: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.error_rate_query = error_rate_query
        self.latency_query = latency_query
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- what analysis asks for --------------------------------------------------------------

    async def measure(self, release: str, since: float, until: float) -> Measurement:
        """Requests, status classes and latency of ``release`` over ``[since, until)``; a
        Measurement with 0 requests when Prometheus could not say (see :meth:`measure_why`)."""
        measurement, _ = await self.measure_why(release, since, until)
        return measurement

    async def measure_why(
        self, release: str, since: float, until: float
    ) -> tuple[Measurement, str | None]:
        """:meth:`measure` and, when the numbers could not be had, the reason (then the
        measurement is incomplete: no series yet is not "no requests")."""
        empty = Measurement(release, since, until, complete=False)
        try:
            status = await self._status_counts(release, since, until)
            if status is None:
                return empty, (
                    f"Prometheus has no http_requests_total series for release {release} over "
                    f"the last {window_text(since, until)} (is it scraped?)"
                )
            requests = sum(status.values())
            if self.error_rate_query is not None and requests:
                rate = await self._scalar(self.error_rate_query, release, since, until)
                status = _with_errors(status, round(rate * requests))
            latency = await self._latency(release, since, until) if requests else {}
            le = await self._buckets(release, since, until) if requests else {}
        except PrometheusError as exc:
            return empty, str(exc)
        measurement = Measurement(
            release, since, until, requests, status, latency_ms=latency, latency_le=le
        )
        return measurement, None

    async def query(self, template: str, release: str, since: float, until: float) -> QueryValue:
        """The value of a query check's template for ``release`` over ``[since, until)``."""
        try:
            value = await self._scalar(template, release, since, until)
        except PrometheusError as exc:
            return QueryValue(release, since, until, None, str(exc))
        return QueryValue(release, since, until, value)

    # -- the queries -------------------------------------------------------------------------

    async def _status_counts(
        self, release: str, since: float, until: float
    ) -> dict[str, int] | None:
        """Requests per status class; None when Prometheus has no series at all."""
        samples = await self.instant(fill(REQUESTS_QUERY, release, since, until), until)
        if not samples:
            return None
        status: dict[str, int] = {}
        for sample in samples:
            cls = status_class(sample.labels.get("status", ""))
            if cls is not None and math.isfinite(sample.value):
                status[cls] = status.get(cls, 0) + round(sample.value)
        return {cls: count for cls, count in status.items() if count > 0}

    async def _latency(self, release: str, since: float, until: float) -> dict[float, float]:
        template = self.latency_query or LATENCY_QUERY
        wanted = QUANTILES if "{quantile}" in template else (99.0,)

        async def one(percentile: float) -> tuple[float, float]:
            query = fill(template, release, since, until, percentile / 100)
            samples = await self.instant(query, until)
            value = samples[0].value if len(samples) == 1 else math.nan
            return percentile, value * 1000

        answers = await asyncio.gather(*(one(p) for p in wanted))
        return {p: ms for p, ms in answers if math.isfinite(ms)}

    async def _buckets(self, release: str, since: float, until: float) -> dict[float, int]:
        """Requests at or below each bucket bound (ms; ``inf`` for ``+Inf``), from the default
        histogram; empty with a user latency query or when Prometheus has none."""
        if self.latency_query is not None:
            return {}
        try:
            samples = await self.instant(fill(BUCKETS_QUERY, release, since, until), until)
        except PrometheusError:
            return {}  # the counts are a refinement: the percentiles still judge
        le: dict[float, int] = {}
        for sample in samples:
            bound = _float(sample.labels.get("le", ""))
            if math.isnan(bound) or not math.isfinite(sample.value):
                continue
            ms = bound if math.isinf(bound) else round(bound * 1000.0, 6)
            le[ms] = round(sample.value)
        return le if math.inf in le else {}

    async def _scalar(self, template: str, release: str, since: float, until: float) -> float:
        query = fill(template, release, since, until)
        samples = await self.instant(query, until)
        if not samples:
            raise PrometheusError(f"Prometheus returned no data for {query}")
        if len(samples) > 1:
            raise PrometheusError(
                f"Prometheus returned {len(samples)} series for {query}; a check needs one "
                "(aggregate it, e.g. with sum(...))"
            )
        return samples[0].value

    async def instant(self, query: str, at: float) -> list[Sample]:
        """``/api/v1/query`` at time ``at``: the samples of a vector (or one, of a scalar)."""
        body = await self._get("/api/v1/query", {"query": query, "time": f"{at:.3f}"}, query)
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(f"Prometheus answered without data for {query}")
        return _samples(data, query)

    async def _get(self, path: str, params: Mapping[str, str], query: str) -> dict[str, Any]:
        session = self._session_()
        try:
            async with session.get(self.url + path, params=params) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    raise PrometheusError(
                        f"Prometheus at {self.url} answered HTTP {response.status} "
                        f"without a JSON body for {query}"
                    )
                if response.status >= 400 or body.get("status") != "success":
                    why = body.get("error") or f"HTTP {response.status}"
                    raise PrometheusError(f"Prometheus rejected {query}: {why}")
                return body
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise PrometheusError(
                f"cannot reach Prometheus at {self.url}: no answer within {self.timeout:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {explain(exc)}") from exc

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session


def _samples(data: Mapping[str, Any], query: str) -> list[Sample]:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [Sample({}, _float(result[1]))]
    if kind != "vector" or not isinstance(result, list):
        raise PrometheusError(
            f"Prometheus answered a {kind} for {query}; expected an instant vector"
        )
    samples = []
    for item in result:
        labels = {str(k): str(v) for k, v in item.get("metric", {}).items()}
        samples.append(Sample(labels, _float(item.get("value", [0, "NaN"])[1])))
    return samples


def _float(text: object) -> float:
    try:
        return float(str(text))
    except ValueError:
        return math.nan


def _with_errors(status: Mapping[str, int], errors: int) -> dict[str, int]:
    """Status classes with ``errors`` 5xx, the other classes scaled to keep the total."""
    total = sum(status.values())
    errors = min(max(errors, 0), total)
    others = {cls: n for cls, n in status.items() if cls != "5xx"}
    rest, kept = total - errors, sum(others.values())
    result = {cls: round(n * rest / kept) for cls, n in others.items()} if kept else {}
    if not result and rest:
        result["2xx"] = rest
    result["5xx"] = errors
    return {cls: n for cls, n in result.items() if n > 0}


# --- the engine's view: a synchronous MeasurementSource fed by a poller -----------------------

ErrorHook = Callable[[str], None]


class PrometheusSource:
    """A MeasurementSource over a :class:`PrometheusProvider` (docs/decisions/0280).

    ``snapshot`` and ``query_value`` are synchronous and never wait: they note what is asked
    and answer from the latest poll (an empty Measurement, or a QueryValue saying there is no
    answer yet, before the first). :meth:`run` polls every ``interval`` seconds, all releases
    of one window at the same ``until`` so canary and stable are compared over the same
    seconds. Keys not asked for in ``forget_after`` seconds are dropped.
    """

    def __init__(
        self,
        provider: PrometheusProvider,
        *,
        interval: float = 1.0,
        forget_after: float = 5.0,
        clock: Callable[[], float] = time.time,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.provider = provider
        self.interval = interval
        self.forget_after = forget_after
        self.clock = clock
        self.on_error = on_error
        self._asked: dict[tuple[str, ...], float] = {}
        self._measurements: dict[tuple[str, float], Measurement] = {}
        self._queries: dict[tuple[str, str, float], QueryValue] = {}
        self._errors: dict[str, str] = {}

    def snapshot(self, release: str, since: float, until: float) -> Measurement:
        self._asked[("m", release, repr(since))] = self.clock()
        cached = self._measurements.get((release, since))
        return cached or Measurement(release, since, since, complete=False)  # not asked yet

    def query_value(self, template: str, release: str, since: float, until: float) -> QueryValue:
        self._asked[("q", template, release, repr(since))] = self.clock()
        cached = self._queries.get((template, release, since))
        if cached is not None:
            return cached
        return QueryValue(release, since, since, None, "no answer from Prometheus yet")

    def observe_table(self, table: RouteTable) -> None:
        """Prometheus tells releases apart by their ``release`` label: nothing to learn."""

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set, then close the provider's connections."""
        try:
            while not stop.is_set():
                await self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            await self.provider.close()

    async def poll(self) -> None:
        """Ask Prometheus once about everything asked for lately."""
        now = self.clock()
        self._asked = {k: t for k, t in self._asked.items() if now - t <= self.forget_after}
        jobs: list[Awaitable[None]] = []
        for key in self._asked:
            since = float(key[-1])
            if since >= now:
                continue  # the window has not begun
            if key[0] == "m":
                jobs.append(self._measure(key[1], since, now))
            else:
                jobs.append(self._query(key[1], key[2], since, now))
        await asyncio.gather(*jobs)
        live = {(k[-2], float(k[-1])) for k in self._asked if k[0] == "m"}
        self._measurements = {k: v for k, v in self._measurements.items() if k in live}
        asked = {(k[1], k[2], float(k[3])) for k in self._asked if k[0] == "q"}
        self._queries = {k: v for k, v in self._queries.items() if k in asked}

    async def _measure(self, release: str, since: float, until: float) -> None:
        measurement, why = await self.provider.measure_why(release, since, until)
        self._measurements[(release, since)] = measurement
        self._report(f"measure {release}", why and f"{release}: {why}")

    async def _query(self, template: str, release: str, since: float, until: float) -> None:
        value = await self.provider.query(template, release, since, until)
        self._queries[(template, release, since)] = value
        self._report(f"query {template} {release}", value.error)

    def _report(self, key: str, error: str | None) -> None:
        """Tell ``on_error`` about a new problem once, not on every poll."""
        if error is None:
            self._errors.pop(key, None)
            return
        if self._errors.get(key) != error and self.on_error is not None:
            self.on_error(error)
        self._errors[key] = error
