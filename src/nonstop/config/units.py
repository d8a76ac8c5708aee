"""Parsing of the small value languages nonstop.toml uses: durations and counts-or-percentages."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``1.5``, ``"500ms"``, ``"10m"``, ``"1h30m"``.

    >>> parse_duration("1h30m")
    5400.0
    """
    if isinstance(value, bool):
        raise ValueError(f'expected a duration such as 30, "30s" or "10m", got {value!r}')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(
                    f'expected a duration such as 30, "30s", "10m" or "1h30m", got "{value}"'
                ) from None
    else:
        raise ValueError(f'expected a duration such as 30, "30s" or "10m", got {value!r}')
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"expected a non-negative duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``90.0`` -> ``"1m30s"``; the inverse of :func:`parse_duration` for display."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total = round(seconds)
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"


Duration = Annotated[float, BeforeValidator(parse_duration)]


def resolve_count(value: str, total: int, *, round_up: bool) -> int:
    """Absolute count of a Kubernetes-style ``max_surge`` / ``max_unavailable`` (``"2"`` or
    ``"25%"``) for ``total`` replicas: percentages round up for surge and down for unavailable,
    exactly as Kubernetes does.

    >>> resolve_count("25%", 5, round_up=True), resolve_count("25%", 5, round_up=False)
    (2, 1)
    """
    if value.endswith("%"):
        exact = total * float(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def parse_int_or_percent(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError(f'expected a count such as 1 or a percentage such as "25%", got {value!r}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a count >= 0, got {value}")
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?%", value.strip()):
        if float(value.strip()[:-1]) > 100:
            raise ValueError(f'expected a percentage between 0% and 100%, got "{value}"')
        return value.strip()
    raise ValueError(f'expected a count such as 1 or a percentage such as "25%", got {value!r}')


CountOrPercent = Annotated[str, BeforeValidator(parse_int_or_percent)]
"""``"2"`` or ``"25%"`` after validation; see :func:`resolve_count`."""


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"512KiB"``, ``"10MiB"``, ``"1GB"`` (1 B to 1 TiB)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        raise ValueError(f'expected a size such as 1048576, "512KiB" or "10MiB", got {value!r}')
    if not 1 <= size <= 1024**4:
        raise ValueError(f"expected a size from 1 byte to 1 TiB, got {value!r}")
    return size


ByteSize = Annotated[int, BeforeValidator(parse_size)]
