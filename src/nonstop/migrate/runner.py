"""Run expand -> backfill -> contract on PostgreSQL: the Python API the deploy engine calls.

    run_expand(config)      pending expand migrations, each with lock_timeout + jittered retries
    run_backfill(config)    pending backfills, in keyset batches, resumable
    check_contract(config)  what stops a contract now (live old instances, unfinished work)
    run_contract(config)    contract migrations, refused while check_contract has blockers
    run_rollback(config)    the down SQL of the latest applied expand migrations, newest first
    plan(config) / status(config)

Nothing here prints: progress goes to an ``on_event`` callback and every function returns a
summary; the CLI renders both.

Why every lock-taking statement runs under a short ``lock_timeout``: an ALTER TABLE waiting for
an ACCESS EXCLUSIVE lock behind a long transaction sits in the lock queue, and every query of
the application on that table queues behind *it*, so a 10-minute report would stall the whole
site for 10 minutes. With lock_timeout = 2 s the application waits at most 2 s, the migration
gives up, sleeps (jittered backoff) while the application runs freely, and tries again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from nonstop.config.schema import MigrationsConfig
from nonstop.config.units import format_duration
from nonstop.errors import StateError, UsageError
from nonstop.migrate import db
from nonstop.migrate.errors import (
    ContractBlocked,
    DatabaseUnavailable,
    LockRetriesExhausted,
    MigrationFailed,
)
from nonstop.migrate.policy import (
    APPLIED,
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
from nonstop.migrate.source import Migration, Statement, discover

T = TypeVar("T")

# Errors worth another attempt: the lock or the rows were busy, nothing is wrong with the SQL.
RETRYABLE = (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected, pgerrors.SerializationFailure)


# -- settings and events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Everything a run needs, resolved from MigrationsConfig and command-line overrides."""

    directory: Path
    url: str
    lock_timeout: float = 2.0
    pg_version: int = 15
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batch_size: int | None = None
    """Overrides every backfill's ``batch=``."""
    pause: float | None = None
    """Overrides every backfill's ``pause=``."""


def resolve(
    config: MigrationsConfig | Target,
    *,
    base_dir: Path | None = None,
    database_url: str | None = None,
    directory: Path | None = None,
    env: dict[str, str] | None = None,
) -> Target:
    if isinstance(config, Target):
        return config
    base = base_dir or Path.cwd()
    folder = directory or Path(config.dir)
    return Target(
        directory=folder if folder.is_absolute() else base / folder,
        url=db.resolve_url(database_url or config.database_url, env),
        lock_timeout=config.lock_timeout,
        pg_version=config.pg_version,
    )


@dataclass(frozen=True, slots=True)
class Retrying:
    name: str
    line: int
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class Applied:
    name: str
    phase: str
    duration_s: float
    attempts: int
    statements: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase,
            "duration_s": round(self.duration_s, 6),
            "attempts": self.attempts,
            "statements": self.statements,
        }


@dataclass(frozen=True, slots=True)
class BackfillStarted:
    name: str
    table: str
    total_estimate: int
    resumed_rows: int


@dataclass(frozen=True, slots=True)
class BatchDone:
    name: str
    rows_done: int
    """Rows updated so far, counting those of a resumed earlier run."""
    batches: int
    last_key: str
    batch_s: float


Event = Retrying | Applied | BackfillStarted | BatchDone
OnEvent = Callable[[Event], None]


def _ignore(_event: Event) -> None:
    return None


@dataclass(frozen=True, slots=True)
class BackfillResult:
    name: str
    table: str
    rows: int
    """Rows this run updated."""
    resumed_rows: int
    """Rows an earlier, interrupted run had already committed."""
    batches: int
    duration_s: float
    longest_batch_s: float
    """The longest batch transaction: the longest any row lock of the backfill was held."""
    retries: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "table": self.table,
            "rows": self.rows,
            "resumed_rows": self.resumed_rows,
            "batches": self.batches,
            "duration_s": round(self.duration_s, 6),
            "rows_per_s": round(self.rows_per_s, 1),
            "longest_batch_s": round(self.longest_batch_s, 6),
            "retries": self.retries,
        }


@dataclass(frozen=True, slots=True)
class RunSummary:
    applied: list[Applied] = field(default_factory=list)
    backfills: list[BackfillResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": [a.to_dict() for a in self.applied],
            "backfills": [b.to_dict() for b in self.backfills],
        }


@dataclass(frozen=True, slots=True)
class ContractCheck:
    pending: list[str]
    blockers: list[str]

    @property
    def allowed(self) -> bool:
        return not self.blockers

    def to_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "blockers": self.blockers, "allowed": self.allowed}


@dataclass(frozen=True, slots=True)
class Plan:
    pending: dict[str, list[str]]
    applied: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "applied": self.applied}


@dataclass(frozen=True, slots=True)
class StatusEntry:
    name: str
    phase: str
    status: str
    """applied, rolled_back, pending, running (a backfill with saved progress) or changed."""
    history: HistoryRow | None = None
    progress_rows: int | None = None
    progress_total: int | None = None
    """A running backfill's table size (the planner's estimate), beside ``progress_rows``."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "phase": self.phase, "status": self.status}
        if self.history is not None:
            out.update({k: v for k, v in self.history.to_dict().items() if k not in out})
        if self.progress_rows is not None:
            out["progress_rows"] = self.progress_rows
        if self.progress_total is not None:
            out["progress_total"] = self.progress_total
        return out


# -- sessions and retries --------------------------------------------------------------------


@dataclass
class _Session:
    conn: db.Connection
    target: Target
    migrations: list[Migration]
    history: list[HistoryRow]
    on_event: OnEvent
    rng: random.Random
    sleep: Callable[[float], None]


@contextmanager
def _session(
    target: Target,
    on_event: OnEvent | None,
    *,
    write: bool,
    check_drift: bool = True,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[_Session]:
    migrations = discover(target.directory, pg_version=target.pg_version)
    conn = db.connect(target.url)
    try:
        if write:
            db.acquire_run_lock(conn, target.url)
            db.ensure_schema(conn, target.lock_timeout)
        history = db.read_history(conn)
        drift = checksum_drift(migrations, history) if check_drift else []
        if drift:
            raise drift[0]
        yield _Session(
            conn, target, migrations, history, on_event or _ignore, rng or random.Random(), sleep
        )
    except psycopg.OperationalError as exc:
        if not conn.closed:
            raise
        raise DatabaseUnavailable(
            f"lost the connection to {db.describe(target.url)}: {exc}"
        ) from exc
    finally:
        conn.close()


def _retrying(
    s: _Session, name: str, current: Callable[[], Statement], attempt_fn: Callable[[int], T]
) -> tuple[T, int]:
    """Run ``attempt_fn(attempt)`` until it succeeds; busy locks and deadlocks are retried with
    jittered backoff, anything else is a MigrationFailed naming the file and line."""
    attempt = 1
    while True:
        try:
            return attempt_fn(attempt), attempt
        except RETRYABLE as exc:
            reason = _pg_message(exc)
            if attempt >= s.target.retry.max_attempts:
                raise LockRetriesExhausted(
                    name, current().line, f"gave up after {attempt} attempts: {reason}"
                ) from exc
            delay = backoff_delay(attempt, s.rng.random(), s.target.retry)
            s.on_event(Retrying(name, current().line, attempt, delay, reason))
            s.sleep(delay)
            attempt += 1
        except psycopg.Error as exc:
            if s.conn.closed:
                raise  # _session reports the lost connection
            message = _pg_message(exc)
            raise MigrationFailed(name, _error_line(current(), exc), message) from exc


def _error_line(statement: Statement, exc: psycopg.Error) -> int:
    """The file line PostgreSQL's error position points at, else the statement's first line."""
    position = exc.diag.statement_position
    if not position or not position.isdigit():
        return statement.line
    return statement.line + statement.sql.count("\n", 0, int(position) - 1)


def _pg_message(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    code = f" [{exc.sqlstate}]" if exc.sqlstate else ""
    hint = f" (hint: {exc.diag.message_hint})" if exc.diag.message_hint else ""
    return f"{primary}{code}{hint}"


def _ms(seconds: float) -> str:
    return f"'{max(1, int(seconds * 1000))}ms'"


# -- expand and contract ---------------------------------------------------------------------


def _execute(
    s: _Session, name: str, statements: tuple[Statement, ...], finish: Callable[[int], None]
) -> int:
    """Run ``statements`` then ``finish(attempts)`` (the history write); return the attempts.

    When every statement may run in a transaction, all of them and ``finish`` commit together
    or not at all, and a busy lock retries the whole file. A file with CREATE INDEX CONCURRENTLY
    & co. runs statement by statement (write those files idempotently: IF NOT EXISTS)."""
    current = [statements[0]]
    set_local = "SET LOCAL lock_timeout = " + _ms(s.target.lock_timeout)

    def all_in_one(attempt: int) -> None:
        with s.conn.transaction():
            s.conn.execute(set_local)
            for statement in statements:
                current[0] = statement
                s.conn.execute(statement.sql)
            finish(attempt)

    def alone(_attempt: int) -> None:
        statement = current[0]
        if statement.transactional:
            with s.conn.transaction():
                s.conn.execute(set_local)
                s.conn.execute(statement.sql)
            return
        # CREATE/DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY, VACUUM: their SHARE UPDATE
        # EXCLUSIVE lock conflicts with no SELECT/INSERT/UPDATE/DELETE, so waiting for it stalls
        # nothing of the application. A lock_timeout would only hurt: CONCURRENTLY also waits for
        # every older transaction, and giving up midway leaves an INVALID index behind
        # (docs/decisions/0221-concurrent-statements-without-lock-timeout.md).
        s.conn.execute("SET lock_timeout = 0")
        try:
            s.conn.execute(statement.sql)
        finally:
            s.conn.execute("RESET lock_timeout")

    def line() -> Statement:
        return current[0]

    if all(statement.transactional for statement in statements):
        return _retrying(s, name, line, all_in_one)[1]
    attempts = 0
    for statement in statements:
        current[0] = statement
        attempts = max(attempts, _retrying(s, name, line, alone)[1])
    finish(attempts)
    return attempts


def _apply(s: _Session, m: Migration) -> Applied:
    started, clock = time.time(), time.monotonic()

    def record(attempts: int) -> None:
        db.record_applied(s.conn, m.name, m.phase, m.checksum, started, attempts)

    attempts = _execute(s, m.name, m.statements, record)
    done = Applied(m.name, m.phase, time.monotonic() - clock, attempts, len(m.statements))
    s.on_event(done)
    return done


def run_expand(
    config: MigrationsConfig | Target,
    *,
    on_event: OnEvent | None = None,
    rng: random.Random | None = None,
    **overrides: Any,
) -> RunSummary:
    """Apply every pending expand migration, in order."""
    target = resolve(config, **overrides)
    with _session(target, on_event, write=True, rng=rng) as s:
        applied = [_apply(s, m) for m in pending(s.migrations, s.history, "expand")]
    return RunSummary(applied=applied)


def check_contract(
    config: MigrationsConfig | Target,
    *,
    state_dir: Path | None = None,
    active: str | None = None,
    live: list[tuple[str, str]] | None = None,
    **overrides: Any,
) -> ContractCheck:
    """Pending contract migrations and what stops them now. ``active``/``live`` default to the
    agent's store under ``state_dir`` (default: ``.nonstop`` in ``base_dir``, the project)."""
    target = resolve(config, **overrides)
    with _session(target, None, write=False) as s:
        return _contract_check(s, _state_dir(state_dir, overrides), active, live)


def _state_dir(state_dir: Path | None, overrides: dict[str, Any]) -> Path:
    return state_dir or (overrides.get("base_dir") or Path.cwd()) / ".nonstop"


def _contract_check(
    s: _Session, state_dir: Path, active: str | None, live: list[tuple[str, str]] | None
) -> ContractCheck:
    todo = [m.name for m in pending(s.migrations, s.history, "contract")]
    if not todo:
        return ContractCheck([], [])
    if live is None:
        from nonstop.store import active_release, live_instances

        live = live_instances(state_dir)
        active = active_release(state_dir)
    earlier = pending(s.migrations, s.history, "expand") + pending(
        s.migrations, s.history, "backfill"
    )
    return ContractCheck(todo, contract_blockers(active, live) + unfinished_work(earlier))


def run_contract(
    config: MigrationsConfig | Target,
    *,
    state_dir: Path | None = None,
    active: str | None = None,
    live: list[tuple[str, str]] | None = None,
    on_event: OnEvent | None = None,
    rng: random.Random | None = None,
    **overrides: Any,
) -> RunSummary:
    """Apply pending contract migrations; ContractBlocked (nothing run) while any blocker holds."""
    target = resolve(config, **overrides)
    with _session(target, on_event, write=True, rng=rng) as s:
        check = _contract_check(s, _state_dir(state_dir, overrides), active, live)
        if check.blockers:
            raise ContractBlocked(check.blockers)
        applied = [_apply(s, m) for m in pending(s.migrations, s.history, "contract")]
    return RunSummary(applied=applied)


# -- backfill --------------------------------------------------------------------------------


def run_backfill(
    config: MigrationsConfig | Target,
    *,
    on_event: OnEvent | None = None,
    rng: random.Random | None = None,
    **overrides: Any,
) -> RunSummary:
    """Run every pending backfill to the end, resuming any that an earlier run left unfinished."""
    target = resolve(config, **overrides)
    with _session(target, on_event, write=True, rng=rng) as s:
        results = [_backfill(s, m) for m in pending(s.migrations, s.history, "backfill")]
    return RunSummary(backfills=results)


class _TooSlow(Exception):
    """A batch hit its statement_timeout (translated so that _retrying lets it through)."""


def _backfill(s: _Session, m: Migration) -> BackfillResult:
    spec = m.backfill
    assert spec is not None, "parse_migration gives every backfill a spec"
    configured = s.target.batch_size or spec.batch
    pause = spec.pause if s.target.pause is None else s.target.pause
    table = sql.Identifier(*spec.table.split("."))
    key = sql.Identifier(spec.key)
    # One batch = the next `size` keys after the last committed one, along the key's index.
    inner = sql.SQL("SELECT {k} FROM {t}{where} ORDER BY {k} LIMIT {n}")
    first, following = (
        sql.SQL("SELECT min({k})::text, max({k})::text FROM ({inner}) AS batch")
        .format(k=key, inner=inner.format(k=key, t=table, where=where, n=sql.SQL(limit)))
        .as_string(s.conn)
        for where, limit in (
            (sql.SQL(""), "$1"),
            (sql.SQL(" WHERE {k} > $1").format(k=key), "$2"),
        )
    )
    progress = db.read_progress(s.conn, m.name, m.checksum)
    last = progress.last_key if progress else None
    resumed = progress.rows_done if progress else 0
    s.on_event(BackfillStarted(m.name, spec.table, _estimate(s, table), resumed))
    started, clock = time.time(), time.monotonic()
    cursor = psycopg.RawCursor(s.conn)
    update = m.statements[0]
    settings = (
        f"SET LOCAL statement_timeout = {_ms(spec.timeout)}; "
        f"SET LOCAL lock_timeout = {_ms(s.target.lock_timeout)}"
    )

    def one_batch(size: int, _attempt: int) -> tuple[str, int, float] | None:
        begun = time.monotonic()
        try:
            with s.conn.transaction():
                s.conn.execute(settings)
                params: list[object] = [size] if last is None else [last, size]
                bounds = cursor.execute(first if last is None else following, params).fetchone()
                if bounds is None or bounds[0] is None:
                    return None
                cursor.execute(update.sql, [bounds[0], bounds[1]])
                count = max(cursor.rowcount, 0)
                db.save_progress(s.conn, m.name, m.checksum, bounds[1], count)
        except pgerrors.QueryCanceled as exc:
            raise _TooSlow(_pg_message(exc)) from exc
        return str(bounds[1]), count, time.monotonic() - begun

    size, streak, rows, batches, retries, longest = configured, 0, 0, 0, 0, 0.0
    while True:
        try:
            outcome, attempts = _retrying(s, m.name, lambda: update, partial(one_batch, size))
        except _TooSlow as slow:
            if size == 1:
                raise MigrationFailed(
                    m.name,
                    update.line,
                    f"{slow}: even one row takes longer than "
                    f"timeout={format_duration(spec.timeout)}; raise timeout= in the header",
                ) from slow
            smaller = next_batch_size(size, configured, timed_out=True, streak=0)
            retries += 1
            s.on_event(
                Retrying(
                    m.name,
                    update.line,
                    retries,
                    0.0,
                    f"a batch of {size} keys hit statement_timeout "
                    f"({format_duration(spec.timeout)}); retrying with {smaller}",
                )
            )
            size, streak = smaller, 0
            continue
        retries += attempts - 1
        if outcome is None:
            break
        last, count, took = outcome
        rows, batches, longest, streak = rows + count, batches + 1, max(longest, took), streak + 1
        s.on_event(BatchDone(m.name, resumed + rows, batches, last, took))
        grown = next_batch_size(size, configured, timed_out=False, streak=streak)
        size, streak = grown, (0 if grown != size else streak)
        if pause:
            s.sleep(pause)
    with s.conn.transaction():
        db.record_applied(
            s.conn, m.name, m.phase, m.checksum, started, 1 + retries, rows=resumed + rows
        )
        db.clear_progress(s.conn, m.name)
    return BackfillResult(
        m.name, spec.table, rows, resumed, batches, time.monotonic() - clock, longest, retries
    )


def _estimate(s: _Session, table: sql.Identifier) -> int:
    """Rows in ``table`` for the progress bar: the planner's estimate, else an exact count."""
    try:
        row = s.conn.execute(
            sql.SQL("SELECT reltuples::bigint FROM pg_class WHERE oid = {t}::regclass").format(
                t=sql.Literal(table.as_string(s.conn))
            )
        ).fetchone()
        if row and row[0] and row[0] > 0:
            return int(row[0])
        counted = s.conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=table)).fetchone()
    except psycopg.errors.UndefinedTable as exc:
        raise UsageError(f"backfill table {table.as_string(s.conn)} does not exist") from exc
    return int(counted[0]) if counted else 0


# -- rollback, plan, status -----------------------------------------------------------------


def run_rollback(
    config: MigrationsConfig | Target,
    *,
    steps: int = 1,
    on_event: OnEvent | None = None,
    rng: random.Random | None = None,
    **overrides: Any,
) -> RunSummary:
    """Undo the latest ``steps`` applied expand migrations with their down SQL, newest first.

    Refused (nothing run) when one of them has no down SQL, its file is gone, or a contract
    was applied after it. Backfills applied after it are marked rolled back too: the columns
    they filled are gone, so the next ``start`` runs them again."""
    target = resolve(config, **overrides)
    with _session(target, on_event, write=True, rng=rng) as s:
        targets = rollback_targets(s.history, steps)
        if not targets:
            raise StateError("nothing to roll back: no expand migration is applied")
        files = {m.name: m for m in s.migrations}
        for row in targets:
            _check_rollback(row, files.get(row.name), s.history)
        done = []
        for row in targets:
            migration = files[row.name]
            later = [
                r.name
                for r in s.history
                if r.phase == "backfill"
                and r.status == APPLIED
                and (r.finished_at or 0) >= (row.finished_at or 0)
            ]
            done.append(_apply_down(s, migration, [row.name, *later]))
    return RunSummary(applied=done)


def _check_rollback(
    row: HistoryRow, migration: Migration | None, history: list[HistoryRow]
) -> None:
    if migration is None:
        raise UsageError(f"cannot roll back {row.name}: its file is gone")
    if not migration.down:
        raise UsageError(
            f"cannot roll back {row.name}: it has no down SQL (add a `-- nonstop: down` "
            "section with the statements that undo it)"
        )
    contracts = [
        r.name
        for r in history
        if r.phase == "contract"
        and r.status == APPLIED
        and (r.finished_at or 0) >= (row.finished_at or 0)
    ]
    if contracts:
        raise StateError(
            f"cannot roll back {row.name}: contract {contracts[0]} was applied after it"
        )


def _apply_down(s: _Session, m: Migration, names: list[str]) -> Applied:
    clock = time.monotonic()
    attempts = _execute(s, m.name, m.down, lambda _attempts: db.mark_rolled_back(s.conn, names))
    done = Applied(m.name, "rollback", time.monotonic() - clock, attempts, len(m.down))
    s.on_event(done)
    return done


def plan(config: MigrationsConfig | Target, **overrides: Any) -> Plan:
    """Pending migrations per phase (refused when an applied file changed)."""
    target = resolve(config, **overrides)
    with _session(target, None, write=False) as s:
        return Plan(
            {
                phase: [m.name for m in pending(s.migrations, s.history, phase)]
                for phase in ("expand", "backfill", "contract")
            },
            sorted(r.name for r in s.history if r.status == APPLIED),
        )


def status(config: MigrationsConfig | Target, **overrides: Any) -> list[StatusEntry]:
    """History with timings, then what is pending; a changed applied file shows as ``changed``."""
    target = resolve(config, **overrides)
    with _session(target, None, write=False, check_drift=False) as s:
        drifted = {d.file for d in checksum_drift(s.migrations, s.history)}
        running = _progress_rows(s.conn)
        entries = [
            StatusEntry(r.name, r.phase, "changed" if r.name in drifted else r.status, r)
            for r in s.history
        ]
        known = {r.name for r in s.history}
        for m in s.migrations:
            if m.name in known:
                continue
            if m.name in running:
                done, total = running[m.name], _backfill_total(s, m)
                entries.append(StatusEntry(m.name, m.phase, "running", None, done, total))
            else:
                entries.append(StatusEntry(m.name, m.phase, "pending"))
    return entries


def _backfill_total(s: _Session, m: Migration) -> int | None:
    """The table a running backfill walks: its estimated rows (None when it cannot say)."""
    if m.backfill is None:
        return None
    try:
        return _estimate(s, sql.Identifier(*m.backfill.table.split(".")))
    except (UsageError, psycopg.Error):
        return None


def _progress_rows(conn: db.Connection) -> dict[str, int]:
    exists = conn.execute("SELECT to_regclass('nonstop.backfill_progress')").fetchone()
    if not exists or exists[0] is None:
        return {}
    rows = conn.execute("SELECT name, rows_done FROM nonstop.backfill_progress").fetchall()
    return {str(name): int(done) for name, done in rows}
