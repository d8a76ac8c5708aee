"""The runner's own tables in the ``nonstop`` schema, and connecting to PostgreSQL (psycopg 3).

``nonstop.migrations``        one row per migration: phase, checksum, status, timings, attempts
``nonstop.backfill_progress`` the last key a running backfill committed, so a killed one resumes

Every foreign exception is translated here (DatabaseUnavailable, UsageError), chained.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from nonstop.errors import UsageError
from nonstop.migrate.errors import DatabaseUnavailable, DatabaseUrlMissing, MigrationLocked
from nonstop.migrate.policy import APPLIED, ROLLED_BACK, HistoryRow

# Fixed key of the session advisory lock that keeps two runners off one database.
RUN_LOCK_KEY = 0x6E6F6E73746F70  # "nonstop"

SCHEMA_SQL = (
    "CREATE SCHEMA IF NOT EXISTS nonstop",
    """CREATE TABLE IF NOT EXISTS nonstop.migrations (
        name text PRIMARY KEY,
        phase text NOT NULL,
        checksum text NOT NULL,
        status text NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz,
        attempts integer NOT NULL DEFAULT 1,
        rows bigint,
        rolled_back_at timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS nonstop.backfill_progress (
        name text PRIMARY KEY,
        checksum text NOT NULL,
        last_key text,
        rows_done bigint NOT NULL DEFAULT 0,
        batches integer NOT NULL DEFAULT 0,
        started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
)

Connection = psycopg.Connection[tuple[Any, ...]]


def resolve_url(database_url: str | None, env: Mapping[str, str] | None = None) -> str:
    """The libpq URL: given literally, or ``$VAR`` from the environment (default ``$DATABASE_URL``).

    >>> resolve_url("$DB", {"DB": "postgresql://localhost/app"})
    'postgresql://localhost/app'
    """
    environ = os.environ if env is None else env
    spec = database_url or "$DATABASE_URL"
    if spec.startswith("$"):
        value = environ.get(spec[1:], "")
        if not value:
            raise DatabaseUrlMissing(
                f"no database URL: {spec} is not set (set [migrations] database_url in "
                "nonstop.toml, pass --database-url, or export DATABASE_URL)"
            )
        return value
    return spec


def describe(url: str) -> str:
    """``host:port/dbname`` of ``url`` without user or password, for messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured database"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


def connect(url: str, *, connect_timeout: int = 5) -> Connection:
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"database_url is not a valid PostgreSQL URL: {exc}") from None
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=connect_timeout,
            application_name="nonstop-migrate",
        )
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines()) or type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {describe(url)}: {reason}"
        ) from exc
    return conn


def ensure_schema(conn: Connection, lock_timeout: float) -> None:
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
        for statement in SCHEMA_SQL:
            conn.execute(statement)


def acquire_run_lock(conn: Connection, url: str) -> None:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,)).fetchone()
    if not row or not row[0]:
        raise MigrationLocked(
            f"another `nonstop migrate` is running against {describe(url)}; wait for it to finish"
        )


def read_history(conn: Connection) -> list[HistoryRow]:
    exists = conn.execute("SELECT to_regclass('nonstop.migrations')").fetchone()
    if not exists or exists[0] is None:
        return []
    rows = conn.execute(
        "SELECT name, phase, checksum, status, extract(epoch FROM started_at)::float8, "
        "extract(epoch FROM finished_at)::float8, attempts, rows, "
        "extract(epoch FROM rolled_back_at)::float8 FROM nonstop.migrations "
        "ORDER BY finished_at NULLS LAST, name"
    ).fetchall()
    out = []
    for name, phase, checksum, status, started, finished, attempts, count, rolled in rows:
        duration = None if finished is None else float(finished) - float(started)
        out.append(
            HistoryRow(
                str(name),
                str(phase),
                str(checksum),
                str(status),
                float(started),
                None if finished is None else float(finished),
                duration,
                int(attempts),
                None if count is None else int(count),
                None if rolled is None else float(rolled),
            )
        )
    return out


def record_applied(
    conn: Connection,
    name: str,
    phase: str,
    checksum: str,
    started_at: float,
    attempts: int,
    rows: int | None = None,
) -> None:
    """Upsert the history row; call inside the migration's own transaction when it has one, so
    the row and the schema change commit together."""
    conn.execute(
        "INSERT INTO nonstop.migrations (name, phase, checksum, status, started_at, finished_at, "
        "attempts, rows) VALUES (%s, %s, %s, %s, to_timestamp(%s), clock_timestamp(), %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET phase = excluded.phase, checksum = excluded.checksum, "
        "status = excluded.status, started_at = excluded.started_at, "
        "finished_at = excluded.finished_at, attempts = excluded.attempts, rows = excluded.rows, "
        "rolled_back_at = NULL",
        (name, phase, checksum, APPLIED, started_at, attempts, rows),
    )


def mark_rolled_back(conn: Connection, names: list[str]) -> None:
    conn.execute(
        "UPDATE nonstop.migrations SET status = %s, rolled_back_at = clock_timestamp() "
        "WHERE name = ANY(%s)",
        (ROLLED_BACK, names),
    )
    conn.execute("DELETE FROM nonstop.backfill_progress WHERE name = ANY(%s)", (names,))


@dataclass(frozen=True, slots=True)
class Progress:
    last_key: str | None
    rows_done: int
    batches: int


def read_progress(conn: Connection, name: str, checksum: str) -> Progress | None:
    """Where a backfill stopped. A progress row of an edited file is dropped: its UPDATE changed,
    so it starts over (backfills must be idempotent: docs/migrations.md)."""
    row = conn.execute(
        "SELECT checksum, last_key, rows_done, batches FROM nonstop.backfill_progress "
        "WHERE name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    if row[0] != checksum:
        conn.execute("DELETE FROM nonstop.backfill_progress WHERE name = %s", (name,))
        return None
    return Progress(None if row[1] is None else str(row[1]), int(row[2]), int(row[3]))


def save_progress(conn: Connection, name: str, checksum: str, last_key: str, rows: int) -> None:
    conn.execute(
        "INSERT INTO nonstop.backfill_progress (name, checksum, last_key, rows_done, batches) "
        "VALUES (%s, %s, %s, %s, 1) ON CONFLICT (name) DO UPDATE SET "
        "last_key = excluded.last_key, rows_done = nonstop.backfill_progress.rows_done + %s, "
        "batches = nonstop.backfill_progress.batches + 1, updated_at = clock_timestamp()",
        (name, checksum, last_key, rows, rows),
    )


def clear_progress(conn: Connection, name: str) -> None:
    conn.execute("DELETE FROM nonstop.backfill_progress WHERE name = %s", (name,))
