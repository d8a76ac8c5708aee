"""What analysis judges: per-release request counts and latency over a window.

Producers (the router's request stream, Prometheus, a synthetic probe) build these; the pure
analysis layer only reads them. A Measurement is plain data, so a verdict can be recomputed from
the journal after a crash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9, 100.0)


@dataclass(frozen=True, slots=True)
class Measurement:
    """Counts for one release over ``[start, end)`` (epoch seconds).

    ``status`` maps a class ("2xx".."5xx") to a count. ``proxy_errors`` counts the 502/503/504
    the router produced itself because no upstream answered; they are also inside ``status["5xx"]``.
    ``latency_ms`` maps a percentile (50, 90, 95, 99, 99.9, 100) to milliseconds; it is empty when
    ``requests`` is 0.

    ``latency_le`` maps a bound in milliseconds to the requests that took at most that long
    (Prometheus' ``le``), for the bounds the source was asked to count at (a latency check's
    ``max``); ``math.inf`` maps to every request with a recorded latency. With it a latency
    check is judged from counts, with a confidence (:mod:`nonstop.analysis.checks`).

    ``complete`` is False when the source cannot have seen the whole window: it began before
    the source started recording (an agent restart in the middle of a step or a watch) or
    before the oldest second it still keeps. Such a window is never a pass: a check judges it
    ``inconclusive`` (errors it does hold are still real, so a watch may still fail on them).
    """

    release: str
    start: float
    end: float
    requests: int = 0
    status: Mapping[str, int] = field(default_factory=dict)
    proxy_errors: int = 0
    latency_ms: Mapping[float, float] = field(default_factory=dict)
    complete: bool = True
    latency_le: Mapping[float, int] = field(default_factory=dict)
    streams: int = 0
    """Upgraded connections (WebSockets) that ended in the window: shown, never judged. Their
    one log line comes at the close, with the connection's whole life as its duration, so
    they are neither requests nor latencies (drivers/metrics/request_stats.py)."""

    def slower_than(self, bound_ms: float) -> tuple[int, int] | None:
        """``(requests slower than bound_ms, requests with a latency)`` when the source counted
        at that bound, else None."""
        at_most = self.latency_le.get(bound_ms)
        if at_most is None:
            return None
        total = self.latency_le.get(math.inf, self.requests)
        return max(0, total - at_most), total

    @property
    def errors(self) -> int:
        """Failed requests from a user's point of view: every 5xx, the router's own included."""
        return self.status.get("5xx", 0)

    @property
    def error_rate(self) -> float | None:
        """``errors / requests``, or None when there were no requests (never a silent 0)."""
        return self.errors / self.requests if self.requests else None

    def latency(self, percentile: float) -> float | None:
        """Latency at ``percentile`` in ms: the smallest recorded percentile >= the one asked."""
        if not self.latency_ms:
            return None
        candidates = sorted(p for p in self.latency_ms if p >= percentile)
        key = candidates[0] if candidates else max(self.latency_ms)
        return self.latency_ms[key]

    def to_dict(self) -> dict[str, object]:
        return {
            "release": self.release,
            "start": self.start,
            "end": self.end,
            "requests": self.requests,
            "status": dict(self.status),
            "proxy_errors": self.proxy_errors,
            "latency_ms": {str(k): v for k, v in self.latency_ms.items()},
            "complete": self.complete,
            "latency_le": {str(k): v for k, v in self.latency_le.items()},
            "streams": self.streams,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Measurement:
        status = data.get("status", {})
        latency = data.get("latency_ms", {})
        le = data.get("latency_le", {})
        assert isinstance(le, Mapping)
        assert isinstance(status, Mapping)
        assert isinstance(latency, Mapping)
        return cls(
            release=str(data["release"]),
            start=float(data["start"]),  # type: ignore[arg-type]
            end=float(data["end"]),  # type: ignore[arg-type]
            requests=int(data.get("requests", 0)),  # type: ignore[call-overload]
            status={str(k): int(v) for k, v in status.items()},
            proxy_errors=int(data.get("proxy_errors", 0)),  # type: ignore[call-overload]
            latency_ms={float(k): float(v) for k, v in latency.items()},
            complete=bool(data.get("complete", True)),
            latency_le={float(k): int(v) for k, v in le.items()},
            streams=int(data.get("streams", 0)),  # type: ignore[call-overload]
        )
