"""A Verdict: what one look at the data says, with the numbers that made it say so.

``outcome`` is one of three words, never a bool:

- ``pass``: the data was enough and within bounds;
- ``fail``: the data was enough and out of bounds;
- ``inconclusive``: the data was not enough (fewer than ``min_samples`` requests), or could not be
  had (the provider's error message is the reason). Never a silent pass or fail.

``reason`` is one sentence a person can check by hand, e.g.
``error_rate 0.052 > max 0.001 over 412 requests (canary v2, 10:00:00-10:00:10)``.
Verdicts go into the journal through ``to_dict``/``from_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

Outcome = Literal["pass", "fail", "inconclusive"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "inconclusive")


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    check: str
    """Name of the check, e.g. ``error_rate``, ``latency_p99``, ``sequential``, ``weight``."""
    reason: str
    value: float | None = None
    threshold: float | None = None
    samples: int = 0
    """Requests (or errors, for the sequential test) the verdict is based on."""
    start: float | None = None
    end: float | None = None
    """The window judged, epoch seconds (None when the verdict is not about one window)."""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")

    def to_dict(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "check": self.check,
            "reason": self.reason,
            "value": self.value,
            "threshold": self.threshold,
            "samples": self.samples,
            "start": self.start,
            "end": self.end,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Verdict:
        return cls(
            outcome=cast(Outcome, str(data["outcome"])),
            check=str(data["check"]),
            reason=str(data["reason"]),
            value=_opt_float(data.get("value")),
            threshold=_opt_float(data.get("threshold")),
            samples=int(cast(int, data.get("samples", 0))),
            start=_opt_float(data.get("start")),
            end=_opt_float(data.get("end")),
        )


def _opt_float(value: object) -> float | None:
    return None if value is None else float(cast(float, value))


def num(value: float) -> str:
    """Three significant digits, plain notation for what people read: 0.052, 612, 1234, 0.000123.

    >>> num(0.05243), num(612.4), num(1234.5), num(0.0)
    ('0.0524', '612', '1234', '0')
    """
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def clock(ts: float) -> str:
    """UTC wall-clock time of an epoch timestamp, ``HH:MM:SS`` (pure: no clock is read)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S")


def window(start: float, end: float) -> str:
    """``10:00:00-10:00:10`` for a window given in epoch seconds."""
    return f"{clock(start)}-{clock(end)}"
