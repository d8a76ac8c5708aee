"""Pure pieces of the load generator: the schedule, status classification and input parsing.

Nothing here reads a clock or does I/O, so each function is pinned by a table of worked examples
in tests/loadgen/test_options.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum

from yarl import URL

from nonstop.errors import UsageError


class Outcome(StrEnum):
    """What happened to one scheduled request. Exactly one per scheduled request."""

    OK = "ok"
    """A response with an expected status (2xx or 3xx unless ``expect_status`` says otherwise)."""
    UNEXPECTED = "unexpected"
    """A 1xx/2xx/3xx response whose status is outside ``expect_status``."""
    CLIENT_ERROR = "4xx"
    SERVER_ERROR = "5xx"
    TRANSPORT = "transport"
    """No response: connection refused, reset, closed before the response was complete..."""
    TIMEOUT = "timeout"
    """Sent, but no complete response within the per-request timeout."""
    NOT_SENT = "not_sent"
    """The generator could not send it within ``max_lag`` of its scheduled time."""


OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)


def slot_count(rps: float, duration: float) -> int:
    """Slots a constant-rate schedule holds in ``[0, duration)``; slot ``i`` is due at ``i / rps``.

    >>> slot_count(300, 30), slot_count(3, 1.5), slot_count(0.5, 3)
    (9000, 5, 2)

    Slots 0..4 of the 3 rps case are due at 0, 0.333, 0.667, 1.0 and 1.333 s; the one at 1.5 s
    is past the end. ``round`` absorbs float noise such as 300 * 0.1 = 30.000000000000004.
    """
    exact = round(rps * duration, 9)
    return max(0, math.ceil(exact))


def classify_status(status: int, expected: frozenset[int] | None = None) -> Outcome:
    """Outcome of a response. Without ``expected``, 2xx and 3xx are ok (redirects are not followed).

    >>> classify_status(302), classify_status(404), classify_status(404, frozenset({404}))
    (<Outcome.OK: 'ok'>, <Outcome.CLIENT_ERROR: '4xx'>, <Outcome.OK: 'ok'>)
    """
    if expected is not None:
        if status in expected:
            return Outcome.OK
    elif 200 <= status < 400:
        return Outcome.OK
    if 400 <= status < 500:
        return Outcome.CLIENT_ERROR
    if status >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.UNEXPECTED


def parse_expect_status(values: Iterable[str]) -> frozenset[int] | None:
    """``["200", "301-302"]`` or ``["200,204"]`` -> ``{200, 204, 301, 302}``; nothing -> None.

    >>> sorted(parse_expect_status(["200,204", "301-302"]) or ())
    [200, 204, 301, 302]
    """
    codes: set[int] = set()
    for value in values:
        for part in value.split(","):
            codes.update(_status_range(part.strip(), value))
    return frozenset(codes) if codes else None


def _status_range(part: str, whole: str) -> range:
    low, sep, high = part.partition("-")
    try:
        first = int(low)
        last = int(high) if sep else first
    except ValueError:
        raise UsageError(
            f'--expect-status: expected a status such as 200, "200,204" or "200-299", got "{whole}"'
        ) from None
    if not 100 <= first <= last <= 599:
        raise UsageError(
            f'--expect-status: expected statuses between 100 and 599, low to high, got "{whole}"'
        )
    return range(first, last + 1)


def parse_header(value: str) -> tuple[str, str]:
    """``"X-Token: abc"`` -> ``("X-Token", "abc")``.

    >>> parse_header("Host:  example.com ")
    ('Host', 'example.com')
    """
    name, sep, rest = value.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise UsageError(f'--header: expected "Name: value", got "{value}"')
    return name, rest.strip()


def check_url(value: str) -> URL:
    """The URL to load, or a UsageError saying what a good one looks like."""
    example = "expected an http:// or https:// URL such as http://127.0.0.1:8080/"
    try:
        url = URL(value)
    except ValueError as exc:  # yarl checks the port here: "Port out of range 0-65535"
        raise UsageError(f'--url: {example}, got "{value}" ({exc})') from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f'--url: {example}, got "{value}"')
    return url


def check_positive(name: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{name}: expected a number > 0, got {value:g}")
    return value
