"""What a load run measured: the pure aggregation (Recorder) and its result (LoadReport).

The generator hands every scheduled request to :meth:`Recorder.record` exactly once, with times it
measured itself; the recorder reads no clock. Two latencies are kept per request:

* from the *scheduled* send time: what a user arriving on schedule waited, including any time the
  request queued behind slow ones (corrected for coordinated omission);
* from the *actual* send time: what the server took once it had the request.

Worked example (rps 10, one connection, a server that takes 300 ms): slot 0 is sent at 0.0 and
answered at 0.3; slot 1 was due at 0.1 but the connection was busy, so it is sent at 0.3 and
answered at 0.6. Slot 1 records 300 ms from sent and 500 ms from scheduled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from nonstop.loadgen.options import OUTCOMES, Outcome

# Latencies are recorded in microseconds, 1 us .. 1 h, 3 significant digits (0.1% error).
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 3_600_000_000, 3
GROUP_LIMIT = 64
"""Distinct group values kept; further ones count as ``(other)`` so memory stays bounded."""
OTHER_GROUP = "(other)"
_INDEX = {outcome: index for index, outcome in enumerate(OUTCOMES)}


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency summary in milliseconds over ``count`` requests (all zero when ``count`` is 0)."""

    count: int = 0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    p999: float = 0.0
    max: float = 0.0
    mean: float = 0.0

    @classmethod
    def of(cls, histogram: HdrHistogram) -> Percentiles:
        count = int(histogram.get_total_count())
        if count == 0:
            return cls()

        def ms(value_us: float) -> float:
            return round(value_us / 1000, 3)

        return cls(
            count=count,
            p50=ms(histogram.get_value_at_percentile(50)),
            p90=ms(histogram.get_value_at_percentile(90)),
            p99=ms(histogram.get_value_at_percentile(99)),
            p999=ms(histogram.get_value_at_percentile(99.9)),
            max=ms(histogram.get_max_value()),
            mean=ms(histogram.get_mean_value()),
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p99.9": self.p999,
            "max": self.max,
            "mean": self.mean,
        }


@dataclass(frozen=True, slots=True)
class TimelineSecond:
    """Outcomes of the requests *scheduled* during second ``second`` of the measured window."""

    second: int
    counts: Mapping[str, int]
    groups: Mapping[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(n for name, n in self.counts.items() if name != Outcome.OK)

    def to_dict(self) -> dict[str, Any]:
        counts = {str(name): n for name, n in self.counts.items()}
        return {"second": self.second, **counts, "groups": dict(self.groups)}


@dataclass(frozen=True, slots=True)
class LoadReport:
    """Everything one run measured. ``scheduled == sum(counts.values())`` always holds."""

    url: str
    method: str
    rps: float
    duration: float
    """Seconds of the measured schedule (warmup excluded)."""
    scheduled: int
    counts: Mapping[str, int]
    """Every outcome name (see :class:`Outcome`) to its count, zeros included."""
    status_codes: Mapping[int, int]
    errors: Mapping[str, int]
    """Transport errors and timeouts by kind, e.g. ``{"ClientConnectorError": 3}``."""
    latency_scheduled: Percentiles
    latency_sent: Percentiles
    timeline: tuple[TimelineSecond, ...]
    groups: Mapping[str, int]
    sent: int
    send_lag: Percentiles
    """From due time to actual send: how well the generator kept its schedule."""
    warmup: Mapping[str, int] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    retried: Mapping[str, int] = field(default_factory=dict)
    """Requests sent a second time because the first attempt got no response byte, by why
    (see ``nonstop.loadgen.generator.RETRY_KINDS``); their outcome is the second attempt's."""

    @property
    def ok(self) -> int:
        return self.counts.get(Outcome.OK, 0)

    @property
    def failed(self) -> int:
        """Every scheduled request that did not end ``ok``, unsent ones included."""
        return self.scheduled - self.ok

    @property
    def not_sent(self) -> int:
        return self.counts.get(Outcome.NOT_SENT, 0)

    @property
    def passed(self) -> bool:
        """True when requests were scheduled and every one of them ended ``ok``."""
        return self.scheduled > 0 and self.failed == 0

    @property
    def achieved_rps(self) -> float:
        """Requests actually sent per second of the measured schedule."""
        return round(self.sent / self.duration, 3) if self.duration > 0 else 0.0

    def verdict(self) -> str:
        if self.scheduled == 0:
            return "FAIL: no request was scheduled, so nothing was proven"
        if self.passed:
            return f"PASS: all {self.scheduled} requests ok"
        parts = [f"{name} {n}" for name, n in self.counts.items() if name != Outcome.OK and n]
        return f"FAIL: {self.failed} of {self.scheduled} requests not ok ({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "method": self.method,
            "rps": self.rps,
            "duration": self.duration,
            "scheduled": self.scheduled,
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "passed": self.passed,
            "achieved_rps": self.achieved_rps,
            "counts": {str(k): n for k, n in self.counts.items()},
            "status_codes": {str(code): n for code, n in sorted(self.status_codes.items())},
            "errors": dict(self.errors),
            "retried": dict(self.retried),
            "latency_ms": {
                "from_scheduled": self.latency_scheduled.to_dict(),
                "from_sent": self.latency_sent.to_dict(),
            },
            "send_lag_ms": self.send_lag.to_dict(),
            "groups": dict(self.groups),
            "timeline": [second.to_dict() for second in self.timeline],
            "warmup": {str(k): n for k, n in self.warmup.items()},
            "settings": dict(self.settings),
            "verdict": self.verdict(),
        }


class Recorder:
    """Accumulates outcomes; cheap enough to call once per request at 500+ rps."""

    def __init__(self) -> None:
        self._counts = [0] * len(OUTCOMES)
        self._status: dict[int, int] = {}
        self._errors: dict[str, int] = {}
        self._retried: dict[str, int] = {}
        self._groups: dict[str, int] = {}
        self._timeline: dict[int, list[int]] = {}
        self._timeline_groups: dict[int, dict[str, int]] = {}
        self._from_scheduled = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self._from_sent = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self._sent = 0
        self._send_lag = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)

    @property
    def total(self) -> int:
        return sum(self._counts)

    def record(
        self,
        outcome: Outcome,
        second: int,
        *,
        since_scheduled: float | None = None,
        since_sent: float | None = None,
        status: int | None = None,
        group: str | None = None,
        error: str | None = None,
        retried: str | None = None,
    ) -> None:
        """One scheduled request's fate. Durations in seconds; ``since_sent`` is None when the
        request never left (``not_sent``), and then ``since_scheduled`` is ignored too."""
        index = _INDEX[outcome]
        self._counts[index] += 1
        per_second = self._timeline.get(second)
        if per_second is None:
            per_second = self._timeline[second] = [0] * len(OUTCOMES)
        per_second[index] += 1
        if since_sent is not None and since_scheduled is not None:
            self._sent += 1
            self._send_lag.record_value(_micros(since_scheduled - since_sent))
            self._from_scheduled.record_value(_micros(since_scheduled))
            self._from_sent.record_value(_micros(since_sent))
        if status is not None:
            self._status[status] = self._status.get(status, 0) + 1
        if error is not None:
            self._errors[error] = self._errors.get(error, 0) + 1
        if retried is not None:
            self._retried[retried] = self._retried.get(retried, 0) + 1
        if group is not None:
            self._count_group(second, group)

    def _count_group(self, second: int, group: str) -> None:
        if group not in self._groups and len(self._groups) >= GROUP_LIMIT:
            group = OTHER_GROUP
        self._groups[group] = self._groups.get(group, 0) + 1
        per_second = self._timeline_groups.setdefault(second, {})
        per_second[group] = per_second.get(group, 0) + 1

    def counts(self) -> dict[str, int]:
        return {outcome.value: n for outcome, n in zip(OUTCOMES, self._counts, strict=True)}

    def report(
        self,
        *,
        url: str,
        method: str,
        rps: float,
        duration: float,
        warmup: Mapping[str, int] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> LoadReport:
        """The report; its timeline has an entry for every second of ``duration``, empty or not."""
        seconds = max([int(duration + 0.999999), *(s + 1 for s in self._timeline)], default=0)
        empty = [0] * len(OUTCOMES)
        timeline = tuple(
            TimelineSecond(
                second=s,
                counts=dict(zip(OUTCOMES, self._timeline.get(s, empty), strict=True)),
                groups=dict(sorted(self._timeline_groups.get(s, {}).items())),
            )
            for s in range(seconds)
        )
        return LoadReport(
            url=url,
            method=method,
            rps=rps,
            duration=round(duration, 6),
            scheduled=self.total,
            counts=self.counts(),
            status_codes=dict(sorted(self._status.items())),
            errors=dict(sorted(self._errors.items())),
            latency_scheduled=Percentiles.of(self._from_scheduled),
            latency_sent=Percentiles.of(self._from_sent),
            timeline=timeline,
            groups=dict(sorted(self._groups.items())),
            sent=self._sent,
            send_lag=Percentiles.of(self._send_lag),
            warmup=dict(warmup or {}),
            settings=dict(settings or {}),
            retried=dict(sorted(self._retried.items())),
        )


def _micros(seconds: float) -> int:
    return min(_HIGHEST_US, max(_LOWEST_US, round(seconds * 1_000_000)))
