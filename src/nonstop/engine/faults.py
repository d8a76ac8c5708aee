"""Fault injection for crash tests: ``NONSTOP_CRASH_AT=intent:weights`` makes the agent exit
abruptly (as ``kill -9`` would leave it) right after journalling that action, so tests can pin
that a restarted agent comes back into a safe state from *every* transition (invariant 4).

Points: ``intent:<kind>`` (journalled, not yet done), ``done:<kind>`` (done, not yet followed by
the next step), ``finish`` (rollout recorded as finished). ``<kind>`` is scale, weights, smoke or
finish. ``NONSTOP_CRASH_AFTER=N`` skips the first N matches.
"""

from __future__ import annotations

import os

_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    target = os.environ.get("NONSTOP_CRASH_AT")
    if not target or target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] > int(os.environ.get("NONSTOP_CRASH_AFTER", "0")):
        os._exit(137)
