"""What is wrong with the agent right now, and the events it could not write yet.

No loop of the agent ends on an exception (invariant 8): a failing step records *why* here,
under a name (``store``, ``engine``, ``router``...), and clears it once the step works again.
``status`` shows every entry as ``degraded: <why>`` with the time it started. Events that the
store could not take (a full disk) wait here, in order and with their own time, and are
written when it can take them again: a failure is never silent and never lost while the agent
lives."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nonstop.errors import explain

PENDING_LIMIT = 2000
"""Events kept in memory at most while the store cannot write (the oldest go first)."""


@dataclass(frozen=True, slots=True)
class PendingEvent:
    ts: float
    level: str
    message: str
    rollout_id: int | None


@dataclass
class Problem:
    why: str
    since: float
    count: int = 1


class Health:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.problems: dict[str, Problem] = {}
        self.pending: deque[PendingEvent] = deque(maxlen=PENDING_LIMIT)
        self.dropped = 0

    @property
    def degraded(self) -> bool:
        return bool(self.problems)

    def fail(self, name: str, why: str) -> bool:
        """Record that ``name`` fails because of ``why``; True when this is news (it was fine
        before, or fails for another reason), so callers report a failure once, not each tick."""
        problem = self.problems.get(name)
        if problem is None:
            self.problems[name] = Problem(why, self.clock())
            return True
        problem.count += 1
        if problem.why != why:
            problem.why = why
            return True
        return False

    def ok(self, name: str) -> Problem | None:
        """``name`` works again; returns the problem it had, if any."""
        return self.problems.pop(name, None)

    def keep(self, event: PendingEvent) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(event)

    def backoff(self, name: str, base: float, cap: float) -> float:
        """Delay before retrying ``name``: ``base`` while it works, doubling per consecutive
        failure up to ``cap``."""
        problem = self.problems.get(name)
        if problem is None:
            return base
        return float(min(cap, base * 2 ** min(problem.count, 16)))

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {"what": name, "why": p.why, "since": p.since, "failures": p.count}
            for name, p in self.problems.items()
        ]


def describe(exc: BaseException) -> str:
    """An exception as a user reads it, in one line: its message (an OSError's reason and
    file), never its class name or a repr (:func:`nonstop.errors.explain`)."""
    return explain(exc)
