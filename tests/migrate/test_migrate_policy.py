"""The runner's pure rules, from tables: backoff, pending, checksum drift, contract gate."""

from __future__ import annotations

import pytest

from nonstop.migrate.policy import (
    GROW_AFTER,
    HistoryRow,
    RetryPolicy,
    backoff_delay,
    checksum_drift,
    contract_blockers,
    next_batch_size,
    pending,
    rollback_targets,
    unfinished_work,
)
from nonstop.migrate.source import parse_migration

POLICY = RetryPolicy(max_attempts=10, base_delay=0.2, max_delay=10.0)

# attempt, uniform draw, expected delay.
# step = min(10, 0.2 * 2**(attempt-1)); delay = step/2 + step/2*draw
BACKOFF = [
    (1, 0.0, 0.1),  # step 0.2: never less than half
    (1, 0.5, 0.15),
    (3, 0.0, 0.4),  # step 0.8
    (3, 0.999, 0.7996),
    (6, 0.5, 4.8),  # step 6.4
    (7, 0.0, 5.0),  # step 12.8 capped at 10
    (12, 1.0, 10.0),
]


@pytest.mark.parametrize(("attempt", "draw", "expected"), BACKOFF)
def test_backoff_is_jittered_exponential_and_capped(
    attempt: int, draw: float, expected: float
) -> None:
    assert backoff_delay(attempt, draw, POLICY) == pytest.approx(expected)


# active release, live (release, instance), expected blockers (by instance id)
GATE = [
    ("v2", [], []),
    ("v2", [("v2", "v2-1"), ("v2", "v2-2")], []),
    ("v2", [("v1", "v1-1"), ("v2", "v2-1")], ["v1-1"]),
    # rollback in progress: v1 became active again, the newer v2 may be the one on the old schema
    ("v1", [("v1", "v1-1"), ("v2", "v2-1")], ["v2-1"]),
    (None, [("v1", "v1-1")], ["v1-1"]),
    (None, [], []),
]


@pytest.mark.parametrize(("active", "live", "blocking"), GATE)
def test_contract_blockers_are_instances_of_other_releases(
    active: str | None, live: list[tuple[str, str]], blocking: list[str]
) -> None:
    blockers = contract_blockers(active, live)
    assert [b.split()[1] for b in blockers] == blocking
    for blocker, instance in zip(blockers, blocking, strict=True):
        release = dict((i, r) for r, i in live)[instance]
        assert f"instance {instance} of release {release} is alive" in blocker


def _row(
    name: str, phase: str, status: str = "applied", finished: float = 1.0, sum_: str = ""
) -> HistoryRow:
    return HistoryRow(name, phase, sum_, status, finished - 0.5, finished, 0.5, 1, None, None)


MIGRATIONS = [
    parse_migration("0001_a.sql", "CREATE TABLE a (id int);", phase="expand"),
    parse_migration(
        "0002_b.sql",
        "-- nonstop: phase=backfill table=a key=id\n"
        "UPDATE a SET id = id WHERE id BETWEEN :lo AND :hi;",
        phase="backfill",
    ),
    parse_migration("0003_c.sql", "ALTER TABLE a ADD COLUMN c int;", phase="expand"),
    parse_migration("0004_d.sql", "DROP TABLE old;", phase="contract"),
]


def test_pending_skips_applied_and_keeps_rolled_back() -> None:
    history = [_row("0001_a.sql", "expand"), _row("0003_c.sql", "expand", status="rolled_back")]
    assert [m.name for m in pending(MIGRATIONS, history, "expand")] == ["0003_c.sql"]
    assert [m.name for m in pending(MIGRATIONS, history, "backfill")] == ["0002_b.sql"]
    assert unfinished_work(pending(MIGRATIONS, history, "backfill")) == [
        "backfill 0002_b.sql has not run yet; run `nonstop migrate start` first"
    ]


def test_checksum_drift_names_file_and_both_checksums() -> None:
    history = [
        _row("0001_a.sql", "expand", sum_="sha256:old"),
        _row("0003_c.sql", "expand", status="rolled_back", sum_="sha256:older"),  # may change
        _row("0004_d.sql", "contract", sum_=MIGRATIONS[3].checksum),
    ]
    drift = checksum_drift(MIGRATIONS, history)
    assert [str(d) for d in drift] == [
        f"0001_a.sql was changed after it was applied (checksum recorded sha256:old, "
        f"file now {MIGRATIONS[0].checksum}); write a new migration instead of editing an "
        "applied one"
    ]


def test_rollback_targets_latest_applied_expand_first() -> None:
    history = [
        _row("0001_a.sql", "expand", finished=1.0),
        _row("0002_b.sql", "backfill", finished=2.0),
        _row("0003_c.sql", "expand", finished=3.0),
        _row("0005_e.sql", "expand", status="rolled_back", finished=4.0),
    ]
    assert [r.name for r in rollback_targets(history, 1)] == ["0003_c.sql"]
    assert [r.name for r in rollback_targets(history, 5)] == ["0003_c.sql", "0001_a.sql"]


# current, configured, timed out, good batches in a row, next size
BATCH_SIZES = [
    (1000, 1000, True, 0, 500),  # timeout: halve
    (500, 1000, True, 0, 250),
    (1, 1000, True, 0, 1),  # cannot shrink further: the runner fails
    (250, 1000, False, GROW_AFTER - 1, 250),  # not yet
    (250, 1000, False, GROW_AFTER, 500),  # 20 good batches: double
    (800, 1000, False, GROW_AFTER, 1000),  # never above what was configured
    (1000, 1000, False, 10 * GROW_AFTER, 1000),
]


@pytest.mark.parametrize(("current", "configured", "timed_out", "streak", "expected"), BATCH_SIZES)
def test_batch_size_halves_on_timeout_and_grows_back(
    current: int, configured: int, timed_out: bool, streak: int, expected: int
) -> None:
    assert next_batch_size(current, configured, timed_out=timed_out, streak=streak) == expected
