"""Flags in the agent's store: ``.nonstop/state.db`` (SQLite, WAL), tables ``flag_*``.

The document the client API serves is Unleash's ``GET /api/client/features`` body, rebuilt
from the rows. Every change is validated with the engine's `validate` on the whole resulting
document *before* it is written, in one transaction: a bad import or edit raises
`FlagDocumentError` naming the flag and the field, and the previous good state keeps serving
(invariant 7). ``revision`` grows by one with every committed change and is the ETag.

Client tokens are stored as SHA-256 hashes; the plain token is returned once, at creation.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nonstop.errors import StateError, UsageError
from nonstop.flags.engine import FlagDocumentError, Problem, validate
from nonstop.flags.limits import MAX_TOTAL, check_depth, name_problem
from nonstop.store.sqlite import connect, immediate

SCHEMA = """
CREATE TABLE IF NOT EXISTS flag_features (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    definition TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS flag_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flag_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS flag_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    flag TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flag_usage (
    name TEXT PRIMARY KEY,
    yes INTEGER NOT NULL,
    no INTEGER NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS flag_outcomes (
    name TEXT PRIMARY KEY,
    flagged_ok INTEGER NOT NULL,
    flagged_errors INTEGER NOT NULL,
    unflagged_ok INTEGER NOT NULL,
    unflagged_errors INTEGER NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS flag_clients (
    app_name TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    sdk_version TEXT NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (app_name, instance_id)
);
CREATE TABLE IF NOT EXISTS flag_rollouts (
    name TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    updated_at REAL NOT NULL
);
"""


def name_problems(features: list[Any]) -> list[Problem]:
    """Names `create` would refuse, for import too: one rule for both paths."""
    problems = []
    for i, feature in enumerate(features):
        if isinstance(feature, Mapping) and isinstance(feature.get("name"), str):
            problem = name_problem(feature["name"])
            if problem is not None:
                problems.append(Problem(f"features[{i}].name", problem))
    return problems


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    name: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def rollout_percentages(feature: Mapping[str, Any]) -> list[str]:
    """The ``rollout`` parameter of each flexibleRollout strategy of ``feature``."""
    return [
        str(s.get("parameters", {}).get("rollout", ""))
        for s in feature.get("strategies") or []
        if isinstance(s, Mapping) and s.get("name") == "flexibleRollout"
    ]


def new_feature(name: str, percent: int, stickiness: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "type": "release",
        "project": "default",
        "enabled": True,
        "stale": False,
        "impressionData": False,
        "strategies": [
            {
                "name": "flexibleRollout",
                "parameters": {
                    "rollout": str(percent),
                    "stickiness": stickiness,
                    "groupId": name,
                },
                "constraints": [],
            }
        ],
        "variants": [],
    }


class FlagStore:
    """Flag definitions, tokens, usage and guarded rollouts, next to the agent's tables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = connect(path, SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._db) as db:
            yield db

    # ---------------------------------------------------------------- document

    @property
    def revision(self) -> int:
        return int(self._meta("revision", "0"))

    def _meta(self, key: str, default: str) -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM flag_meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def features(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT definition FROM flag_features ORDER BY position, name"
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def segments(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self._meta("segments", "[]"))
        return data

    def document(self) -> dict[str, Any]:
        """The client features document (``GET /api/client/features``)."""
        doc: dict[str, Any] = {"version": 1, "features": self.features()}
        segments = self.segments()
        if segments:
            doc["segments"] = segments
        return doc

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute(
                "SELECT definition FROM flag_features WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise UsageError(f'no flag "{name}" (`nonstop flags list` shows the flags)')
        data: dict[str, Any] = json.loads(row[0])
        return data

    def exists(self, name: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM flag_features WHERE name = ?", (name,)).fetchone()
        return row is not None

    def replace_document(self, document: Mapping[str, Any]) -> int:
        """Import: validate the whole document, then replace every flag and segment with it.
        Returns the new revision; on a bad document raises and changes nothing."""
        if not isinstance(document, Mapping):
            raise FlagDocumentError([Problem("", 'expected a JSON object with "features"')])
        check_depth(document, "import")
        features = document.get("features")
        problems = validate(document)
        if not isinstance(features, list):
            problems = problems or [Problem("features", "expected a list of flags")]
        else:
            problems = name_problems(features) + problems
        if problems:
            raise FlagDocumentError(problems)
        assert isinstance(features, list)
        segments = document.get("segments") or []
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM flag_features")
            db.executemany(
                "INSERT INTO flag_features (name, position, definition, updated_at) "
                "VALUES (?, ?, ?, ?)",
                [(f["name"], i, json.dumps(f), now) for i, f in enumerate(features)],
            )
            db.execute(
                "INSERT OR REPLACE INTO flag_meta (key, value) VALUES ('segments', ?)",
                (json.dumps(segments),),
            )
            return self._bump(db)

    def put(self, feature: dict[str, Any], *, create: bool = False) -> int:
        """Create or update one flag; the document it makes must validate. Returns the revision."""
        name = feature["name"]
        check_depth(feature, f"flag {name}")
        problem = name_problem(name)
        if problem is not None:
            raise FlagDocumentError([Problem("name", problem)])
        features = self.features()
        names = [f["name"] for f in features]
        if create and name in names:
            raise StateError(f'flag "{name}" already exists')
        if not create and name not in names:
            raise UsageError(f'no flag "{name}" (`nonstop flags list` shows the flags)')
        candidate = [feature if f["name"] == name else f for f in features]
        if create:
            candidate.append(feature)
        doc = {"version": 1, "features": candidate, "segments": self.segments()}
        problems = validate(doc)
        if problems:
            raise FlagDocumentError(problems)
        position = names.index(name) if name in names else len(names)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO flag_features (name, position, definition, updated_at) "
                "VALUES (?, ?, ?, ?)",
                (name, position, json.dumps(feature), time.time()),
            )
            return self._bump(db)

    def update(self, name: str, change: Any) -> dict[str, Any]:
        """Apply ``change(feature_copy) -> None`` to one flag and store it; returns the flag."""
        feature = copy.deepcopy(self.get(name))
        change(feature)
        self.put(feature)
        return feature

    def delete(self, name: str) -> int:
        with self._tx() as db:
            cursor = db.execute("DELETE FROM flag_features WHERE name = ?", (name,))
            if cursor.rowcount == 0:
                raise UsageError(f'no flag "{name}" (`nonstop flags list` shows the flags)')
            db.execute("DELETE FROM flag_rollouts WHERE name = ?", (name,))
            db.execute("DELETE FROM flag_outcomes WHERE name = ?", (name,))
            return self._bump(db)

    def _bump(self, db: sqlite3.Connection) -> int:
        revision = self.revision + 1
        db.execute(
            "INSERT OR REPLACE INTO flag_meta (key, value) VALUES ('revision', ?)",
            (str(revision),),
        )
        return revision

    # ---------------------------------------------------------------- tokens

    def create_token(self, name: str) -> str:
        """A new client token; only its hash is kept, so this is the one time it is seen."""
        token = f"nonstop:{secrets.token_urlsafe(32)}"
        with self._tx() as db:
            db.execute(
                "INSERT INTO flag_tokens (name, hash, created_at) VALUES (?, ?, ?)",
                (name, hash_token(token), time.time()),
            )
        return token

    def tokens(self) -> list[TokenRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, created_at FROM flag_tokens ORDER BY id"
            ).fetchall()
        return [TokenRow(*r) for r in rows]

    def token_hashes(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT hash FROM flag_tokens").fetchall()]

    def check_token(self, token: str) -> bool:
        """Constant time in the token's value: every stored hash is compared."""
        given = hash_token(token).encode()
        found = False
        for stored in self.token_hashes():
            found |= hmac.compare_digest(given, stored.encode())
        return found

    # ---------------------------------------------------------------- events, usage, clients

    def add_event(self, flag: str, message: str, level: str = "info") -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO flag_events (ts, flag, level, message) VALUES (?, ?, ?, ?)",
                (time.time(), flag, level, message),
            )

    def events(self, flag: str, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, level, message FROM flag_events WHERE flag = ? "
                "ORDER BY id DESC LIMIT ?",
                (flag, limit),
            ).fetchall()
        return [{"ts": ts, "level": level, "message": msg} for ts, level, msg in reversed(rows)]

    def add_usage(self, toggles: Mapping[str, tuple[int, int]]) -> None:
        """Add SDK counts (each 0..MAX_COUNT, checked by the caller). Totals saturate at
        MAX_TOTAL (2^62): with a post at most 2^31 the sum stays below 2^63, so SQLite never
        turns a total into a float, whatever clients send."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT INTO flag_usage (name, yes, no, last_seen) VALUES (?, MIN(?, ?), "
                "MIN(?, ?), ?) ON CONFLICT(name) DO UPDATE SET "
                "yes = MIN(yes + excluded.yes, ?), no = MIN(no + excluded.no, ?), "
                "last_seen = excluded.last_seen",
                [
                    (name, yes, MAX_TOTAL, no, MAX_TOTAL, now, MAX_TOTAL, MAX_TOTAL)
                    for name, (yes, no) in toggles.items()
                ],
            )

    def usage(self) -> dict[str, dict[str, float]]:
        with self._lock:
            rows = self._db.execute("SELECT name, yes, no, last_seen FROM flag_usage").fetchall()
        return {n: {"yes": y, "no": no, "last_seen": ts} for n, y, no, ts in rows}

    def add_outcomes(self, outcomes: Mapping[str, tuple[int, int, int, int]]) -> None:
        """Add reported outcomes per flag: (flagged ok, flagged errors, unflagged ok,
        unflagged errors), each 0..MAX_COUNT (checked by the caller); totals saturate at
        MAX_TOTAL like the usage counts."""
        now = time.time()
        cap = MAX_TOTAL
        with self._tx() as db:
            db.executemany(
                "INSERT INTO flag_outcomes (name, flagged_ok, flagged_errors, unflagged_ok, "
                "unflagged_errors, last_seen) VALUES (?, MIN(?, ?), MIN(?, ?), MIN(?, ?), "
                "MIN(?, ?), ?) ON CONFLICT(name) DO UPDATE SET "
                "flagged_ok = MIN(flagged_ok + excluded.flagged_ok, ?), "
                "flagged_errors = MIN(flagged_errors + excluded.flagged_errors, ?), "
                "unflagged_ok = MIN(unflagged_ok + excluded.unflagged_ok, ?), "
                "unflagged_errors = MIN(unflagged_errors + excluded.unflagged_errors, ?), "
                "last_seen = excluded.last_seen",
                [
                    (name, a, cap, b, cap, c, cap, d, cap, now, cap, cap, cap, cap)
                    for name, (a, b, c, d) in outcomes.items()
                ],
            )

    def outcomes(self, name: str) -> tuple[int, int, int, int]:
        """The flag's outcome totals: (flagged ok, flagged errors, unflagged ok, unflagged
        errors), zeros when none was reported."""
        with self._lock:
            row = self._db.execute(
                "SELECT flagged_ok, flagged_errors, unflagged_ok, unflagged_errors "
                "FROM flag_outcomes WHERE name = ?",
                (name,),
            ).fetchone()
        return (0, 0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def register_client(self, app_name: str, instance_id: str, sdk_version: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO flag_clients (app_name, instance_id, sdk_version, "
                "last_seen) VALUES (?, ?, ?, ?)",
                (app_name, instance_id, sdk_version, time.time()),
            )

    def clients(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT app_name, instance_id, sdk_version, last_seen FROM flag_clients "
                "ORDER BY last_seen DESC"
            ).fetchall()
        keys = ("app_name", "instance_id", "sdk_version", "last_seen")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ---------------------------------------------------------------- guarded rollouts

    def save_rollout(self, name: str, plan: Mapping[str, Any], status: str, reason: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO flag_rollouts (name, plan, status, reason, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, json.dumps(plan), status, reason, time.time()),
            )

    def rollout(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT plan, status, reason, updated_at FROM flag_rollouts WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        return {
            "plan": json.loads(row[0]),
            "status": row[1],
            "reason": row[2],
            "updated_at": row[3],
        }

    def running_rollouts(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name FROM flag_rollouts WHERE status = 'running' ORDER BY name"
            ).fetchall()
        return [r[0] for r in rows]
