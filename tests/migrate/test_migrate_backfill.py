"""Backfills on a real PostgreSQL: under a concurrent writer, and killed then resumed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
from migrate_helpers import target, write

from nonstop.migrate import runner

# 1M rows take 7.5 s on this 2-core machine when idle, 15 s when busy (seeding included, writer
# running): the test keeps the full size. NONSTOP_TEST_BACKFILL_ROWS=200000 shrinks it on a
# slower box; benchmarks/bench_backfill.py measures speed.
ROWS = int(os.environ.get("NONSTOP_TEST_BACKFILL_ROWS", "1000000"))

SCHEMA = "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);\n"
# The expand step of the new release: a column, and a trigger that keeps it right for every
# row the application writes from now on, so the backfill only has to fix the old rows.
DUAL_WRITE = """
ALTER TABLE users ADD COLUMN email_lower text;
CREATE FUNCTION users_email_lower() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.email_lower := lower(NEW.email);
  RETURN NEW;
END $$;
CREATE TRIGGER users_email_lower BEFORE INSERT OR UPDATE OF email ON users
  FOR EACH ROW EXECUTE FUNCTION users_email_lower();
"""
FILL = """-- nonstop: phase=backfill table=users key=id batch={batch}
UPDATE users SET email_lower = lower(email)
 WHERE id BETWEEN :lo AND :hi AND email_lower IS DISTINCT FROM lower(email);
"""


def seed(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO users (email) SELECT 'User' || g || '@Example.ORG' "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE users")


class Writer(threading.Thread):
    """The application: inserts new users and changes existing emails until told to stop."""

    def __init__(self, url: str, max_id: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.max_id = max_id
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.expected: dict[int, str] = {}
        self.inserted = 0

    def run(self) -> None:
        rng = random.Random(7)
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                for n in range(1_000_000):
                    if self.stop.is_set():
                        break
                    email = f"New{n}@Example.ORG"
                    row = conn.execute(
                        "INSERT INTO users (email) VALUES (%s) RETURNING id", (email,)
                    ).fetchone()
                    assert row is not None
                    self.expected[row[0]] = email
                    self.inserted += 1
                    victim = rng.randint(1, self.max_id)
                    changed = f"Changed{n}@Example.ORG"
                    conn.execute("UPDATE users SET email = %s WHERE id = %s", (changed, victim))
                    self.expected[victim] = changed
        except BaseException as exc:
            self.errors.append(exc)


def test_backfill_under_a_concurrent_writer_loses_and_breaks_nothing(
    tmp_path: Path, database_url: str
) -> None:
    seed(database_url, ROWS)
    folder = write(
        tmp_path / "m",
        {"0001_dual_write.sql": DUAL_WRITE, "0002_fill.sql": FILL.format(batch=10000)},
    )
    settings = target(folder, database_url)
    runner.run_expand(settings)

    writer = Writer(database_url, ROWS)
    writer.start()
    try:
        summary = runner.run_backfill(settings)
    finally:
        writer.stop.set()
        writer.join(timeout=60)

    assert writer.errors == []
    assert writer.inserted > 0
    result = summary.backfills[0]
    assert result.batches >= ROWS // 10000  # and more for the rows the writer added meanwhile
    assert 0 < result.rows <= ROWS
    with psycopg.connect(database_url) as conn:
        count = conn.execute("SELECT count(*) FROM users").fetchone()
        wrong = conn.execute(
            "SELECT count(*) FROM users WHERE email_lower IS DISTINCT FROM lower(email)"
        ).fetchone()
        ids = list(writer.expected)
        rows = conn.execute("SELECT id, email FROM users WHERE id = ANY(%s)", (ids,)).fetchall()
    assert count == (ROWS + writer.inserted,)
    assert wrong == (0,)
    assert dict(rows) == writer.expected  # every write of the application is there, unchanged


def test_killed_backfill_resumes_where_it_stopped(tmp_path: Path, database_url: str) -> None:
    rows = 40_000
    seed(database_url, rows)
    folder = write(
        tmp_path / "m", {"0001_column.sql": DUAL_WRITE, "0002_fill.sql": FILL.format(batch=1000)}
    )
    settings = target(folder, database_url)
    runner.run_expand(settings)
    command = [
        sys.executable, "-m", "nonstop.cli", "migrate", "start", "--dir", str(folder),
        "--database-url", database_url, "--pause", "20ms", "--json",
    ]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            done = 0
            for _ in range(3000):  # up to ~30 s for the child to commit 5 batches
                row = conn.execute("SELECT to_regclass('nonstop.backfill_progress')").fetchone()
                if row and row[0]:
                    found = conn.execute(
                        "SELECT rows_done FROM nonstop.backfill_progress"
                    ).fetchone()
                    done = found[0] if found else 0
                if done >= 5000 or child.poll() is not None:
                    break
                threading.Event().wait(0.01)
            child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, stderr.decode()

    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(1000):  # the killed client's backend notices the closed socket and exits
            gone = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nonstop-migrate'"
            ).fetchone()
            if gone == (0,):
                break
            threading.Event().wait(0.01)
        progress = conn.execute(
            "SELECT last_key::bigint, rows_done, batches FROM nonstop.backfill_progress"
        ).fetchone()
        assert progress is not None
        last_key, rows_done, batches = progress
        # The progress row commits with its batch: everything up to last_key is done, nothing after.
        split = conn.execute(
            "SELECT count(*) FILTER (WHERE id <= %s AND email_lower IS NULL), "
            "count(*) FILTER (WHERE id > %s AND email_lower IS NOT NULL) FROM users",
            (last_key, last_key),
        ).fetchone()
    assert 5000 <= rows_done < rows
    assert (last_key, rows_done) == (batches * 1000, batches * 1000)
    assert split == (0, 0)

    resumed = runner.run_backfill(settings).backfills[0]
    assert resumed.resumed_rows == rows_done
    assert resumed.rows == rows - rows_done
    with psycopg.connect(database_url) as conn:
        wrong = conn.execute(
            "SELECT count(*) FROM users WHERE email_lower IS DISTINCT FROM lower(email)"
        ).fetchone()
        recorded = conn.execute(
            "SELECT rows FROM nonstop.migrations WHERE name = '0002_fill.sql'"
        ).fetchone()
    assert wrong == (0,)
    assert recorded == (rows,)


def test_a_batch_over_its_timeout_is_cancelled_and_retried_smaller(
    tmp_path: Path, database_url: str
) -> None:
    """statement_timeout bounds how long a batch holds its row locks: a slow batch is cancelled
    (locks released) and retried at half size until it fits."""
    seed(database_url, 200)
    # Batches spanning more than 30 keys sleep 1 s, longer than their 300 ms timeout.
    slow = (
        "-- nonstop: phase=backfill table=users key=id batch=100 timeout=300ms\n"
        "UPDATE users SET email_lower = lower(email)\n"
        " WHERE id BETWEEN :lo AND :hi\n"
        "   AND (SELECT pg_sleep(CASE WHEN :hi::bigint - :lo::bigint > 30 THEN 1 ELSE 0 END))\n"
        "       IS NOT NULL;\n"
    )
    folder = write(tmp_path / "m", {"0001_column.sql": DUAL_WRITE, "0002_fill.sql": slow})
    settings = target(folder, database_url)
    runner.run_expand(settings)
    events: list[runner.Event] = []
    result = runner.run_backfill(settings, on_event=events.append).backfills[0]
    shrinks = [e.reason for e in events if isinstance(e, runner.Retrying)]
    assert shrinks == [
        "a batch of 100 keys hit statement_timeout (300ms); retrying with 50",
        "a batch of 50 keys hit statement_timeout (300ms); retrying with 25",
    ]
    assert (result.rows, result.batches, result.retries) == (200, 8, 2)
    assert result.longest_batch_s < 0.3
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email_lower IS NULL").fetchone() == (
            0,
        )
