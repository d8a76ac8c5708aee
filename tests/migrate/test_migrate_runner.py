"""The runner on a real PostgreSQL: history, checksums, lock retries, contract gate, rollback."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
from migrate_helpers import target, write

from nonstop.config.schema import MigrationsConfig
from nonstop.drivers.runtime import procfs
from nonstop.errors import UsageError
from nonstop.migrate import runner
from nonstop.migrate.db import RUN_LOCK_KEY
from nonstop.migrate.errors import (
    ChecksumMismatch,
    ContractBlocked,
    LockRetriesExhausted,
    MigrationFailed,
    MigrationLocked,
)
from nonstop.migrate.policy import RetryPolicy
from nonstop.migrate.runner import Retrying
from nonstop.store import open_store

USERS = "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);\n"
EMAIL_LOWER = (
    "ALTER TABLE users ADD COLUMN email_lower text;\n"
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email_lower ON users (email_lower);\n"
    "-- nonstop: down\n"
    "DROP INDEX CONCURRENTLY IF EXISTS users_email_lower;\n"
    "ALTER TABLE users DROP COLUMN email_lower;\n"
)
FILL = (
    "-- nonstop: phase=backfill table=users key=id batch=100\n"
    "UPDATE users SET email_lower = lower(email) WHERE id BETWEEN :lo AND :hi;\n"
)
DROP_EMAIL = "-- nonstop: phase=contract\nALTER TABLE users DROP COLUMN email;\n"


def columns(url: str, table: str = "users") -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position",
            (table,),
        ).fetchall()
    return [r[0] for r in rows]


def history(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT name, phase, status FROM nonstop.migrations ORDER BY name")
        return [(r[0], r[1], r[2]) for r in rows.fetchall()]


def test_history_records_each_migration_and_refuses_an_edited_one(
    tmp_path: Path, database_url: str
) -> None:
    folder = write(tmp_path / "m", {"0001_users.sql": USERS, "0002_email_lower.sql": EMAIL_LOWER})
    settings = target(folder, database_url)
    summary = runner.run_expand(settings)
    assert [(a.name, a.phase, a.statements) for a in summary.applied] == [
        ("0001_users.sql", "expand", 1),
        ("0002_email_lower.sql", "expand", 2),
    ]
    assert columns(database_url) == ["id", "email", "email_lower"]
    entries = runner.status(settings)
    assert [(e.name, e.status) for e in entries] == [
        ("0001_users.sql", "applied"),
        ("0002_email_lower.sql", "applied"),
    ]
    first = entries[0].history
    assert first is not None
    assert first.checksum.startswith("sha256:")
    assert first.finished_at is not None
    assert first.duration_s is not None
    assert first.finished_at >= first.started_at
    assert runner.run_expand(settings).applied == []  # nothing pending: idempotent

    (folder / "0001_users.sql").write_text(USERS + "-- tweaked\n")
    with pytest.raises(ChecksumMismatch) as refused:
        runner.run_expand(settings)
    assert refused.value.file == "0001_users.sql"
    assert refused.value.recorded == first.checksum
    assert refused.value.current != first.checksum
    assert refused.value.recorded in str(refused.value)
    assert refused.value.current in str(refused.value)
    assert [e.status for e in runner.status(settings)] == ["changed", "applied"]


def test_failed_statement_names_file_and_line_and_leaves_nothing_behind(
    tmp_path: Path, database_url: str
) -> None:
    folder = write(
        tmp_path / "m",
        {
            "0001_users.sql": USERS
            + "ALTER TABLE users\n  ADD COLUMN a int;\nALTER TABLE nope ADD b int;"
        },
    )
    with pytest.raises(MigrationFailed) as failed:
        runner.run_expand(target(folder, database_url))
    assert str(failed.value).startswith('0001_users.sql:4: relation "nope" does not exist')
    assert columns(database_url) == []  # the whole file rolled back with its history row
    assert history(database_url) == []


def test_busy_lock_is_retried_politely_and_never_blocks_the_app(
    tmp_path: Path, database_url: str
) -> None:
    folder = write(tmp_path / "m", {"0001_users.sql": USERS})
    runner.run_expand(target(folder, database_url))
    write(folder, {"0002_add.sql": "ALTER TABLE users ADD COLUMN nickname text;"})
    with psycopg.connect(database_url, autocommit=True) as app:
        app.execute("INSERT INTO users (email) VALUES ('a@x.org')")
        # A long report holds ACCESS SHARE on users; ADD COLUMN needs ACCESS EXCLUSIVE.
        report = psycopg.connect(database_url)
        report.execute("SELECT count(*) FROM users").fetchone()

        retries: list[Retrying] = []
        retried_thrice = threading.Event()

        def on_event(event: runner.Event) -> None:
            if isinstance(event, Retrying):
                retries.append(event)
                if len(retries) >= 3:
                    retried_thrice.set()

        result: list[runner.RunSummary] = []
        migration = threading.Thread(
            target=lambda: result.append(
                runner.run_expand(target(folder, database_url), on_event=on_event)
            )
        )
        migration.start()
        # The app keeps querying the table the whole time. Its own lock_timeout (1 s) is 5x the
        # migration's (0.2 s): a migration that queued without a timeout would fail it.
        app.execute("SET lock_timeout = '1s'")
        served = 0
        for _ in range(10_000):
            app.execute("SELECT email FROM users WHERE id = 1").fetchone()
            served += 1
            if retried_thrice.wait(0.01):
                break
        report.rollback()  # the report ends: the next attempt gets its lock
        report.close()
        migration.join(timeout=60)
    assert retried_thrice.is_set()
    assert served >= 1
    assert {r.name for r in retries} == {"0002_add.sql"}
    assert all("lock timeout" in r.reason for r in retries)
    assert result[0].applied[0].attempts == len(retries) + 1
    assert columns(database_url) == ["id", "email", "nickname"]


def test_without_lock_timeout_the_same_alter_would_block_the_app(database_url: str) -> None:
    """The contrast that makes the test above meaningful."""
    with psycopg.connect(database_url, autocommit=True) as setup:
        setup.execute(USERS)
    report = psycopg.connect(database_url)
    report.execute("SELECT count(*) FROM users").fetchone()

    def alter_without_timeout() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE users ADD COLUMN nickname text")

    alter = threading.Thread(target=alter_without_timeout)
    alter.start()
    with psycopg.connect(database_url, autocommit=True) as app:
        for _ in range(500):  # until the ALTER is queued behind the report
            waiting = app.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0]:
                break
            threading.Event().wait(0.01)
        app.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            app.execute("SELECT email FROM users WHERE id = 1")
    report.rollback()
    report.close()
    alter.join(timeout=30)


def test_contract_is_refused_while_an_old_release_instance_is_alive(
    tmp_path: Path, database_url: str
) -> None:
    folder = write(tmp_path / "m", {"0001_users.sql": USERS, "0003_drop.sql": DROP_EMAIL})
    settings = target(folder, database_url)
    runner.run_expand(settings)
    state = tmp_path / ".nonstop"
    state.mkdir()
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        store = open_store(state)
        handle = {
            "instance_id": "v1-1",
            "release": "v1",
            "pid": old.pid,
            "port": 9,
            "start_marker": procfs.start_marker(old.pid),
        }
        store.upsert_instance("v1-1", "v1", handle, "draining")
        store.put("active_release", "v2")
        store.close()

        check = runner.check_contract(settings, state_dir=state)
        assert check.pending == ["0003_drop.sql"]
        assert len(check.blockers) == 1
        assert "instance v1-1 of release v1 is alive" in check.blockers[0]
        with pytest.raises(ContractBlocked) as refused:
            runner.run_contract(settings, state_dir=state)
        assert refused.value.exit_code == 1
        # The deploy engine's way: nonstop.toml's [migrations], the project dir holds .nonstop/
        config = MigrationsConfig(dir="m", database_url=database_url)
        assert runner.check_contract(config, base_dir=tmp_path).blockers == check.blockers
        assert columns(database_url) == ["id", "email"]  # nothing ran
    finally:
        old.kill()
        old.wait()
    summary = runner.run_contract(settings, state_dir=state)
    assert [a.name for a in summary.applied] == ["0003_drop.sql"]
    assert columns(database_url) == ["id"]


def test_contract_waits_for_pending_backfills(tmp_path: Path, database_url: str) -> None:
    fill = FILL.replace("email_lower", "email")
    files = {"0001_users.sql": USERS, "0002_fill.sql": fill, "0003_drop.sql": DROP_EMAIL}
    folder = write(tmp_path / "m", files)
    settings = target(folder, database_url)
    runner.run_expand(settings)
    check = runner.check_contract(settings, active="v2", live=[("v2", "v2-1")])
    assert check.blockers == [
        "backfill 0002_fill.sql has not run yet; run `nonstop migrate start` first"
    ]
    runner.run_backfill(settings)
    assert runner.check_contract(settings, active="v2", live=[("v2", "v2-1")]).allowed


def test_rollback_runs_down_sql_latest_first_and_start_reapplies(
    tmp_path: Path, database_url: str
) -> None:
    folder = write(
        tmp_path / "m",
        {"0001_users.sql": USERS, "0002_email_lower.sql": EMAIL_LOWER, "0003_fill.sql": FILL},
    )
    settings = target(folder, database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(USERS)  # the app's table already exists: 0001 is written idempotently below
        conn.execute("INSERT INTO users (email) SELECT 'U' || g FROM generate_series(1, 250) g")
    write(folder, {"0001_users.sql": USERS.replace("TABLE users", "TABLE IF NOT EXISTS users")})
    runner.run_expand(settings)
    runner.run_backfill(settings)

    with pytest.raises(UsageError, match=r"0001_users\.sql: it has no down SQL"):
        runner.run_rollback(settings, steps=2)
    assert columns(database_url) == ["id", "email", "email_lower"]  # refused before any change

    summary = runner.run_rollback(settings, steps=1)
    assert [(a.name, a.phase) for a in summary.applied] == [("0002_email_lower.sql", "rollback")]
    assert columns(database_url) == ["id", "email"]
    assert history(database_url) == [
        ("0001_users.sql", "expand", "applied"),
        ("0002_email_lower.sql", "expand", "rolled_back"),
        ("0003_fill.sql", "backfill", "rolled_back"),  # its column is gone: it runs again
    ]
    assert runner.plan(settings).pending == {
        "expand": ["0002_email_lower.sql"],
        "backfill": ["0003_fill.sql"],
        "contract": [],
    }
    runner.run_expand(settings)
    again = runner.run_backfill(settings)
    assert again.backfills[0].rows == 250
    with psycopg.connect(database_url) as conn:
        wrong = conn.execute("SELECT count(*) FROM users WHERE email_lower <> lower(email)")
        assert wrong.fetchone() == (0,)


def test_concurrent_index_waits_for_old_transactions_and_ends_valid(
    tmp_path: Path, database_url: str
) -> None:
    folder = write(tmp_path / "m", {"0001_users.sql": USERS})
    runner.run_expand(target(folder, database_url))
    write(folder, {"0002_index.sql": "CREATE INDEX CONCURRENTLY users_email ON users (email);"})
    writer = psycopg.connect(database_url)
    writer.execute("INSERT INTO users (email) VALUES ('slow@x.org')")  # a write stays open
    result: list[runner.RunSummary] = []
    migration = threading.Thread(
        target=lambda: result.append(runner.run_expand(target(folder, database_url)))
    )
    migration.start()
    with psycopg.connect(database_url, autocommit=True) as app:
        for _ in range(3000):  # until the index build waits for the old transaction
            waiting = app.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nonstop-migrate'"
                " AND wait_event_type = 'Lock'"
            ).fetchone()
            if (waiting and waiting[0]) or not migration.is_alive():
                break
            threading.Event().wait(0.01)
        assert waiting == (1,)
        # Meanwhile the application writes to the table without waiting at all.
        app.execute("SET lock_timeout = '100ms'")
        app.execute("INSERT INTO users (email) VALUES ('during@x.org')")
        writer.commit()
        writer.close()
        migration.join(timeout=60)
        valid = app.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_email'::regclass"
        ).fetchone()
    assert valid == (True,)
    assert result[0].applied[0].attempts == 1


def test_a_lock_that_never_comes_fails_with_file_and_line(
    tmp_path: Path, database_url: str
) -> None:
    folder = write(tmp_path / "m", {"0001_users.sql": USERS})
    runner.run_expand(target(folder, database_url))
    write(folder, {"0002_add.sql": "-- nick\n\nALTER TABLE users ADD COLUMN nick text;"})
    report = psycopg.connect(database_url)
    report.execute("SELECT count(*) FROM users").fetchone()
    try:
        few = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
        with pytest.raises(LockRetriesExhausted) as failed:
            runner.run_expand(target(folder, database_url, retry=few))
    finally:
        report.close()
    assert str(failed.value).startswith("0002_add.sql:3: gave up after 3 attempts: canceling")
    assert failed.value.exit_code == 1
    assert "nick" not in columns(database_url)


def test_two_runners_exclude_each_other(tmp_path: Path, database_url: str) -> None:
    folder = write(tmp_path / "m", {"0001_users.sql": USERS})
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (RUN_LOCK_KEY,))
        with pytest.raises(MigrationLocked, match="another `nonstop migrate` is running"):
            runner.run_expand(target(folder, database_url))
    assert runner.run_expand(target(folder, database_url)).applied[0].name == "0001_users.sql"
