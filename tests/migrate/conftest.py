"""A private PostgreSQL for the migration runner tests: one server per session, one fresh
database per test (CREATE DATABASE from template1 is quick), all in a temporary directory."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from migrate_helpers import require_binary

from nonstop.migrate.tempdb import CANDIDATE_BIN_DIRS, TempPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[TempPostgres]:
    initdb = require_binary("initdb", *(f"{d}/initdb" for d in CANDIDATE_BIN_DIRS))
    pg_ctl = require_binary("pg_ctl", *(f"{d}/pg_ctl" for d in CANDIDATE_BIN_DIRS))
    # Not pytest's tmp_path: its parent is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="nonstop-pg-"))
    server = TempPostgres(root, initdb, pg_ctl)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(postgres: TempPostgres) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
