"""Bounds on what reaches the flag store, the same for every path (CLI import, admin API,
client API): one reading of JSON, one rule for names, one rule for counts.

- documents: at most 8 MiB of UTF-8 JSON, nested at most 64 deep, integers of at most 4,300
  digits (Python's own limit), no ``NaN``/``Infinity``; flag names as `create` takes them
  (``[A-Za-z0-9][A-Za-z0-9_.~-]{0,99}``, Unleash's rule for names in URLs).
- SDK metrics: a count per post is a whole number 0..2^31-1 (a client reports one interval,
  seconds long); at most 10,000 toggles per post; stored totals saturate at 2^62, so two
  huge posts never overflow SQLite's 64-bit integers into a float.
- guarded rollouts: ``every`` is 0.1 s..30 days, ``min_requests`` at most 10^9.
"""

from __future__ import annotations

import json
import re
from typing import Any

from nonstop.config.validate import shown
from nonstop.errors import UsageError

MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.~-]{0,99}")
MAX_COUNT = 2**31 - 1
MAX_TOTAL = 2**62
MAX_TOGGLES = 10_000
MIN_EVERY_S = 0.1
MAX_EVERY_S = 30 * 86400.0
MAX_MIN_REQUESTS = 10**9


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a flag name, or None."""
    if isinstance(name, str) and NAME_RE.fullmatch(name):
        return None
    return (
        "expected letters, digits and . _ ~ - (up to 100, starting with a letter or digit), "
        f"got {shown(name)}"
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def load_json(data: str | bytes, where: str) -> Any:
    """Parse a JSON document within the bounds above; :class:`UsageError` names ``where``."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > MAX_DOCUMENT_BYTES:
        raise UsageError(f"{where}: {size} bytes is more than the {MAX_DOCUMENT_BYTES} allowed")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{where}: not UTF-8 text (byte {exc.start}): is it a binary file?"
            ) from None
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise UsageError(f"{where}: nested more than {MAX_DEPTH} deep") from None
    except ValueError as exc:  # JSONDecodeError, an integer over 4,300 digits, NaN
        raise UsageError(f"{where}: not valid JSON: {exc}") from None
    check_depth(value, where)
    return value


def check_depth(value: object, where: str) -> None:
    """Refuse values nested more than MAX_DEPTH deep (iteratively: no recursion to blow)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise UsageError(f"{where}: nested more than {MAX_DEPTH} deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def count(value: object, where: str) -> int:
    """A metrics count: a whole number 0..MAX_COUNT."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise UsageError(f"{where}: expected a count 0..{MAX_COUNT}, got {shown(value, 40)}")
    return value
