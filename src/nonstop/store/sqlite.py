"""Durable state under ``.nonstop/state.db`` (SQLite, WAL, synchronous=FULL).

Everything the agent needs to come back after ``kill -9`` lives here: releases, instances
(address and the runtime's opaque reference), rollouts with their planner state, the journal of
actions (intended, then done) and events. Writes commit before their effect happens
(invariant 4): the engine records "intended" before it touches the router or a process, and
"done" after.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nonstop.store.desired import LEGACY_KEYS, DesiredState, fold_legacy

DESIRED_KEY = "desired_state"

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    cwd TEXT NOT NULL,
    command TEXT NOT NULL,
    env TEXT NOT NULL DEFAULT '{}',
    config TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    release TEXT NOT NULL,
    handle TEXT NOT NULL,
    state TEXT NOT NULL,
    ready_since REAL,
    drain_deadline REAL,
    updated_at REAL NOT NULL,
    role TEXT NOT NULL DEFAULT 'web'
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    strategy TEXT NOT NULL,
    candidate TEXT NOT NULL,
    stable TEXT,
    rollback INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id INTEGER,
    ts REAL NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    rollout_id INTEGER,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

INSTANCE_STATES = ("starting", "ready", "unready", "draining", "stopped", "failed")


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    name: str
    created_at: float
    cwd: str
    command: str
    env: dict[str, str]
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InstanceRow:
    id: str
    release: str
    handle: dict[str, Any]
    state: str
    ready_since: float | None
    drain_deadline: float | None
    updated_at: float
    role: str = "web"


@dataclass(frozen=True, slots=True)
class RolloutRow:
    id: int
    strategy: str
    candidate: str
    stable: str | None
    rollback: bool
    state: dict[str, Any]
    status: str
    reason: str | None
    started_at: float
    updated_at: float
    finished_at: float | None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "strategy": self.strategy,
            "candidate": self.candidate,
            "stable": self.stable,
            "rollback": self.rollback,
            "state": self.state,
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
        }


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection to the state database with the settings every table in it relies on:
    autocommit (transactions are explicit), WAL, synchronous=FULL (a commit survives power
    loss), rows by name, ``schema`` applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(schema)
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (BEGIN IMMEDIATE), rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Store:
    """One SQLite database; every public method is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = connect(path, SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(instances)")}
        if "role" not in columns:  # a state dir from before process roles
            self._db.execute("ALTER TABLE instances ADD COLUMN role TEXT NOT NULL DEFAULT 'web'")
        self._upgrade_handles()
        self._fold_desired_state()

    def _upgrade_handles(self) -> None:
        """Rewrite instance handles an older agent wrote (pid, start marker and tag in the
        open) into opaque runtime references, so this agent adopts that agent's instances."""
        from nonstop.drivers.runtime.localref import upgrade_handle

        rows = self._db.execute("SELECT id, handle FROM instances").fetchall()
        upgraded = [(row["id"], upgrade_handle(json.loads(row["handle"]))) for row in rows]
        changes = [(json.dumps(handle), id_) for id_, handle in upgraded if handle is not None]
        if changes:
            with immediate(self._db) as db:
                db.executemany("UPDATE instances SET handle = ? WHERE id = ?", changes)

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db)

    def _fold_desired_state(self) -> None:
        """Move an older state dir's desired-state keys into the one typed record."""
        placeholders = ", ".join("?" for _ in LEGACY_KEYS)
        rows = self._db.execute(
            f"SELECT key, value FROM kv WHERE key IN ({placeholders})", LEGACY_KEYS
        ).fetchall()
        if not rows:
            return
        state = fold_legacy({row["key"]: json.loads(row["value"]) for row in rows})
        with immediate(self._db) as db:
            if self.get(DESIRED_KEY) is None:
                self.put(DESIRED_KEY, state.to_dict())
            db.execute(f"DELETE FROM kv WHERE key IN ({placeholders})", LEGACY_KEYS)

    # -- desired state -----------------------------------------------------------------------

    def desired_state(self) -> DesiredState:
        """The engine's desired state (store/desired.py); its only reader."""
        return DesiredState.from_dict(self.get(DESIRED_KEY) or {})

    def save_desired_state(self, state: DesiredState) -> None:
        """Its only writer: the whole record in one write, so readers never see half of it."""
        self.put(DESIRED_KEY, state.to_dict())

    # -- key/value ---------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def put(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    # -- releases ----------------------------------------------------------------------------

    def add_release(
        self, name: str, cwd: str, command: str, env: Mapping[str, str], config: Mapping[str, Any]
    ) -> ReleaseRow:
        now = time.time()
        self._db.execute(
            "INSERT INTO releases (name, created_at, cwd, command, env, config) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (name, now, cwd, command, json.dumps(dict(env)), json.dumps(dict(config))),
        )
        return ReleaseRow(name, now, cwd, command, dict(env), dict(config))

    def release(self, name: str) -> ReleaseRow | None:
        row = self._db.execute("SELECT * FROM releases WHERE name = ?", (name,)).fetchone()
        return self._release(row) if row else None

    def releases(self) -> list[ReleaseRow]:
        rows = self._db.execute("SELECT * FROM releases ORDER BY created_at").fetchall()
        return [self._release(r) for r in rows]

    @staticmethod
    def _release(row: sqlite3.Row) -> ReleaseRow:
        return ReleaseRow(
            row["name"],
            row["created_at"],
            row["cwd"],
            row["command"],
            json.loads(row["env"]),
            json.loads(row["config"]),
        )

    # -- instances ---------------------------------------------------------------------------

    def upsert_instance(
        self,
        instance_id: str,
        release: str,
        handle: Mapping[str, Any],
        state: str,
        *,
        ready_since: float | None = None,
        drain_deadline: float | None = None,
        role: str = "web",
    ) -> None:
        assert state in INSTANCE_STATES, state
        self._db.execute(
            "INSERT INTO instances (id, release, handle, state, ready_since, drain_deadline, "
            "updated_at, role) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "handle = excluded.handle, state = excluded.state, ready_since = excluded.ready_since, "
            "drain_deadline = excluded.drain_deadline, updated_at = excluded.updated_at",
            (
                instance_id,
                release,
                json.dumps(dict(handle)),
                state,
                ready_since,
                drain_deadline,
                time.time(),
                role,
            ),
        )

    def set_instance_state(
        self,
        instance_id: str,
        state: str,
        *,
        ready_since: float | None = None,
        drain_deadline: float | None = None,
    ) -> None:
        assert state in INSTANCE_STATES, state
        self._db.execute(
            "UPDATE instances SET state = ?, ready_since = ?, drain_deadline = ?, updated_at = ? "
            "WHERE id = ?",
            (state, ready_since, drain_deadline, time.time(), instance_id),
        )

    def delete_instance(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))

    def instances(self, *, include_stopped: bool = False) -> list[InstanceRow]:
        query = "SELECT * FROM instances"
        if not include_stopped:
            query += " WHERE state NOT IN ('stopped')"
        rows = self._db.execute(query + " ORDER BY id").fetchall()
        return [
            InstanceRow(
                r["id"],
                r["release"],
                json.loads(r["handle"]),
                r["state"],
                r["ready_since"],
                r["drain_deadline"],
                r["updated_at"],
                r["role"],
            )
            for r in rows
        ]

    def next_instance_number(self, release: str, role: str = "web") -> int:
        key = f"instance-seq:{release}" if role == "web" else f"instance-seq:{release}:{role}"
        with self.transaction():
            number = int(self.get(key, 0)) + 1
            self.put(key, number)
        return number

    # -- rollouts ----------------------------------------------------------------------------

    def start_rollout(
        self,
        strategy: str,
        candidate: str,
        stable: str | None,
        state: Mapping[str, Any],
        *,
        rollback: bool = False,
    ) -> RolloutRow:
        """Create a running rollout; refuses a second one (the caller reports StateError)."""
        now = time.time()
        with self.transaction() as db:
            running = db.execute("SELECT id FROM rollouts WHERE status = 'running'").fetchone()
            if running:
                raise RolloutInProgress(int(running["id"]))
            cursor = db.execute(
                "INSERT INTO rollouts (strategy, candidate, stable, rollback, state, status, "
                "started_at, updated_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                (strategy, candidate, stable, int(rollback), json.dumps(dict(state)), now, now),
            )
            rollout_id = cursor.lastrowid
        assert rollout_id is not None
        found = self.rollout(rollout_id)
        assert found is not None
        return found

    def save_rollout_state(self, rollout_id: int, state: Mapping[str, Any]) -> None:
        self._db.execute(
            "UPDATE rollouts SET state = ?, updated_at = ? WHERE id = ?",
            (json.dumps(dict(state)), time.time(), rollout_id),
        )

    def finish_rollout(self, rollout_id: int, status: str, reason: str) -> None:
        now = time.time()
        self._db.execute(
            "UPDATE rollouts SET status = ?, reason = ?, updated_at = ?, finished_at = ? "
            "WHERE id = ?",
            (status, reason, now, now, rollout_id),
        )

    def rollout(self, rollout_id: int) -> RolloutRow | None:
        row = self._db.execute("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        return self._rollout(row) if row else None

    def running_rollout(self) -> RolloutRow | None:
        row = self._db.execute(
            "SELECT * FROM rollouts WHERE status = 'running' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return self._rollout(row) if row else None

    def rollout_counts(self) -> list[tuple[str, bool, str, int]]:
        """Finished rollouts by ``(strategy, rollback, status)``: every one ever (rollouts are
        never deleted), so /metrics can count them."""
        rows = self._db.execute(
            "SELECT strategy, rollback, status, count(*) FROM rollouts WHERE status != 'running' "
            "GROUP BY strategy, rollback, status ORDER BY strategy, rollback, status"
        ).fetchall()
        return [(str(r[0]), bool(r[1]), str(r[2]), int(r[3])) for r in rows]

    def rollouts(self, limit: int = 50) -> list[RolloutRow]:
        rows = self._db.execute(
            "SELECT * FROM rollouts ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [self._rollout(r) for r in rows]

    @staticmethod
    def _rollout(row: sqlite3.Row) -> RolloutRow:
        return RolloutRow(
            id=row["id"],
            strategy=row["strategy"],
            candidate=row["candidate"],
            stable=row["stable"],
            rollback=bool(row["rollback"]),
            state=json.loads(row["state"]),
            status=row["status"],
            reason=row["reason"],
            started_at=row["started_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
        )

    # -- journal and events ------------------------------------------------------------------

    def journal_intent(self, rollout_id: int | None, action: Mapping[str, Any]) -> int:
        cursor = self._db.execute(
            "INSERT INTO journal (rollout_id, ts, action, status) VALUES (?, ?, ?, 'intended')",
            (rollout_id, time.time(), json.dumps(dict(action))),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def journal_done(self, entry_id: int, status: str = "done", detail: str | None = None) -> None:
        self._db.execute(
            "UPDATE journal SET status = ?, detail = ? WHERE id = ?", (status, detail, entry_id)
        )

    def journal(self, rollout_id: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
        if rollout_id is None:
            rows = self._db.execute(
                "SELECT * FROM journal ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM journal WHERE rollout_id = ? ORDER BY id DESC LIMIT ?",
                (rollout_id, limit),
            ).fetchall()
        return [{**dict(r), "action": json.loads(r["action"])} for r in reversed(rows)]

    def add_event(
        self,
        message: str,
        *,
        level: str = "info",
        rollout_id: int | None = None,
        ts: float | None = None,
    ) -> int:
        """Append an event; ``ts`` is when it happened (default now: an event kept in memory
        while the store could not write keeps its own time)."""
        cursor = self._db.execute(
            "INSERT INTO events (ts, rollout_id, level, message) VALUES (?, ?, ?, ?)",
            (time.time() if ts is None else ts, rollout_id, level, message),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def events(
        self, *, after: int = 0, rollout_id: int | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM events WHERE id > ?", [after]
        if rollout_id is not None:
            query += " AND rollout_id = ?"
            args.append(rollout_id)
        rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [dict(r) for r in reversed(rows)]


class RolloutInProgress(Exception):
    def __init__(self, rollout_id: int) -> None:
        super().__init__(f"rollout {rollout_id} is in progress")
        self.rollout_id = rollout_id
