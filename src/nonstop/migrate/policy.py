"""Pure decisions of the runner: retry backoff, what is pending, checksum drift, the contract gate.

No I/O, no clock, no randomness of their own: the runner passes in what it read and a uniform
draw for the jitter, so every rule here is tested from tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nonstop.migrate.errors import ChecksumMismatch
from nonstop.migrate.source import Migration

APPLIED = "applied"
ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a lock-taking statement retries after hitting ``lock_timeout``.

    Each attempt waits at most ``lock_timeout`` in PostgreSQL's lock queue, so the application's
    queries that queue behind it wait at most that long too; between attempts the lock queue is
    empty again and the application runs at full speed. With the defaults (2 s lock_timeout,
    30 attempts, 0.2 s base, 10 s cap) a migration gives up after about 5 minutes of trying.
    """

    max_attempts: int = 30
    base_delay: float = 0.2
    max_delay: float = 10.0


def backoff_delay(attempt: int, draw: float, policy: RetryPolicy) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based), "equal jitter":
    half of the exponential step is fixed, half is random, so concurrent runners spread out
    but never retry at once.

    ``draw`` is uniform in [0, 1). With base 0.2 s and cap 10 s: attempt 1 waits 0.1..0.2 s,
    attempt 3 waits 0.4..0.8 s, attempt 7 (12.8 s, capped at 10) waits 5..10 s.
    """
    step: float = min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
    return step / 2 + step / 2 * draw


GROW_AFTER = 20
"""Consecutive batches within the timeout before a shrunk batch size doubles again."""


def next_batch_size(current: int, configured: int, *, timed_out: bool, streak: int) -> int:
    """Batch size after a batch: halve on statement_timeout, grow back slowly.

    The per-batch statement_timeout is what bounds how long a backfill holds row locks: a
    batch that hits it is cancelled (its locks released at once) and retried at half size.
    After ``GROW_AFTER`` good batches in a row the size doubles, never above ``configured``.
    configured 1000: 1000 times out -> 500 -> 250; 250 after 20 good batches -> 500;
    a single row that times out cannot shrink further (the runner then fails).
    """
    if timed_out:
        return max(1, current // 2)
    if current < configured and streak >= GROW_AFTER:
        return min(configured, current * 2)
    return current


@dataclass(frozen=True, slots=True)
class HistoryRow:
    name: str
    phase: str
    checksum: str
    status: str
    started_at: float
    finished_at: float | None
    duration_s: float | None
    attempts: int
    rows: int | None
    rolled_back_at: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "phase": self.phase,
            "checksum": self.checksum,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "attempts": self.attempts,
            "rows": self.rows,
            "rolled_back_at": self.rolled_back_at,
        }


def applied_names(history: Iterable[HistoryRow]) -> set[str]:
    return {row.name for row in history if row.status == APPLIED}


def pending(
    migrations: Iterable[Migration], history: Iterable[HistoryRow], phase: str
) -> list[Migration]:
    """Migrations of ``phase`` not currently applied (never run, or rolled back), in run order."""
    done = applied_names(history)
    return [m for m in migrations if m.phase == phase and m.name not in done]


def checksum_drift(
    migrations: Iterable[Migration], history: Iterable[HistoryRow]
) -> list[ChecksumMismatch]:
    """Applied migrations whose file no longer matches what was applied."""
    files = {m.name: m for m in migrations}
    out = []
    for row in history:
        current = files.get(row.name)
        if row.status == APPLIED and current is not None and current.checksum != row.checksum:
            out.append(ChecksumMismatch(row.name, row.checksum, current.checksum))
    return out


def contract_blockers(active: str | None, live: Iterable[tuple[str, str]]) -> list[str]:
    """Why a contract migration may not run now (empty: it may).

    Invariant 6: a contract never runs while an instance of a release that needs the old schema
    is alive. Every release other than the active one may need it: the previous release during
    a rollout or while kept warm for rollback, or any older one still draining. With no active
    release recorded, no live instance can be vouched for, so all of them block.
    """
    blockers = []
    for release, instance in sorted(live):
        if release != active:
            needs = "the active release is unknown" if active is None else f"active is {active}"
            blockers.append(
                f"instance {instance} of release {release} is alive and may need the old "
                f"schema ({needs}); finish or roll back the deploy first"
            )
    return blockers


def unfinished_work(earlier: Iterable[Migration]) -> list[str]:
    """A contract also waits for every pending expand and backfill: it removes what they replace."""
    return [
        f"{m.phase} {m.name} has not run yet; run `nonstop migrate start` first" for m in earlier
    ]


def rollback_targets(history: Iterable[HistoryRow], steps: int) -> list[HistoryRow]:
    """The latest ``steps`` applied expand migrations, newest first."""
    applied = [r for r in history if r.status == APPLIED and r.phase == "expand"]
    applied.sort(key=lambda r: (r.finished_at or r.started_at, r.name), reverse=True)
    return applied[:steps]
