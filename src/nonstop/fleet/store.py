"""The controller's journal: fleet rollouts, their decisions and events, in SQLite (WAL).

Like the engine's store (invariant 4): a decision's new state and its actions ("intended") are
committed in one transaction before any action runs; each batch of actions is marked "done"
after. A controller killed mid-rollout restarts (``nonstop fleet resume``), replays the
intended actions (each is idempotent) and decides again from the stored state.

File: ``.nonstop/fleet/fleet.db``. Operator commands (abort, resume) from another shell are
rows the running controller picks up on its next tick.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nonstop.errors import StateError
from nonstop.fleet.plan import FleetAction, FleetState, action_from_dict, action_to_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
  id INTEGER PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL,
  status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
  started_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL
);
CREATE TABLE IF NOT EXISTS journal (
  id INTEGER PRIMARY KEY, rollout_id INTEGER NOT NULL, actions TEXT NOT NULL,
  status TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, rollout_id INTEGER, at REAL NOT NULL, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
  id INTEGER PRIMARY KEY, rollout_id INTEGER NOT NULL, command TEXT NOT NULL,
  taken INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS one_running ON rollouts(status) WHERE status = 'running';
"""


@dataclass(frozen=True, slots=True)
class FleetRollout:
    id: int
    spec: dict[str, Any]
    state: FleetState
    status: str
    reason: str
    started_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": self.spec,
            "state": self.state.to_dict(),
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at,
        }


class FleetStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def start(self, spec: dict[str, Any], state: FleetState) -> FleetRollout:
        now = time.time()
        try:
            with self.db:
                cursor = self.db.execute(
                    "INSERT INTO rollouts (spec, state, status, started_at, updated_at) "
                    "VALUES (?, ?, 'running', ?, ?)",
                    (json.dumps(spec), json.dumps(state.to_dict()), now, now),
                )
        except sqlite3.IntegrityError:
            raise StateError(already_running(self.running())) from None
        assert cursor.lastrowid is not None
        return FleetRollout(cursor.lastrowid, spec, state, "running", "", now)

    def running(self) -> FleetRollout | None:
        row = self.db.execute(
            "SELECT id, spec, state, status, reason, started_at FROM rollouts "
            "WHERE status = 'running'"
        ).fetchone()
        return self._rollout(row) if row else None

    def latest(self) -> FleetRollout | None:
        row = self.db.execute(
            "SELECT id, spec, state, status, reason, started_at FROM rollouts ORDER BY id DESC"
        ).fetchone()
        return self._rollout(row) if row else None

    def _rollout(self, row: tuple[Any, ...]) -> FleetRollout:
        return FleetRollout(
            row[0], json.loads(row[1]), FleetState.from_dict(json.loads(row[2])), *row[3:]
        )

    def decide(self, rollout_id: int, state: FleetState, actions: tuple[FleetAction, ...]) -> int:
        """Store the new state and its actions as intended, in one transaction."""
        now = time.time()
        with self.db:
            self.db.execute(
                "UPDATE rollouts SET state = ?, updated_at = ? WHERE id = ?",
                (json.dumps(state.to_dict()), now, rollout_id),
            )
            cursor = self.db.execute(
                "INSERT INTO journal (rollout_id, actions, status, at) "
                "VALUES (?, ?, 'intended', ?)",
                (rollout_id, json.dumps([action_to_dict(a) for a in actions]), now),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def done(self, entry: int) -> None:
        with self.db:
            self.db.execute("UPDATE journal SET status = 'done' WHERE id = ?", (entry,))

    def intended(self, rollout_id: int) -> list[tuple[int, tuple[FleetAction, ...]]]:
        rows = self.db.execute(
            "SELECT id, actions FROM journal WHERE rollout_id = ? AND status = 'intended' "
            "ORDER BY id",
            (rollout_id,),
        ).fetchall()
        return [(row[0], tuple(action_from_dict(a) for a in json.loads(row[1]))) for row in rows]

    def finish(self, rollout_id: int, status: str, reason: str) -> None:
        now = time.time()
        with self.db:
            self.db.execute(
                "UPDATE rollouts SET status = ?, reason = ?, updated_at = ?, finished_at = ? "
                "WHERE id = ?",
                (status, reason, now, now, rollout_id),
            )

    def event(self, rollout_id: int | None, message: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO events (rollout_id, at, message) VALUES (?, ?, ?)",
                (rollout_id, time.time(), message),
            )

    def events(self, rollout_id: int) -> list[tuple[float, str]]:
        rows = self.db.execute(
            "SELECT at, message FROM events WHERE rollout_id = ? ORDER BY id", (rollout_id,)
        ).fetchall()
        return [(float(at), str(message)) for at, message in rows]

    def command(self, rollout_id: int, command: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO commands (rollout_id, command) VALUES (?, ?)", (rollout_id, command)
            )

    def take_command(self, rollout_id: int) -> str | None:
        with self.db:
            row = self.db.execute(
                "SELECT id, command FROM commands WHERE rollout_id = ? AND taken = 0 ORDER BY id",
                (rollout_id,),
            ).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE commands SET taken = 1 WHERE id = ?", (row[0],))
        return str(row[1])


def already_running(rollout: FleetRollout | None) -> str:
    what = f" (#{rollout.id} to {rollout.spec.get('candidate')})" if rollout else ""
    return (
        f"a fleet rollout is already running{what}: `nonstop fleet resume` continues it, "
        "`nonstop fleet abort` stops it"
    )
