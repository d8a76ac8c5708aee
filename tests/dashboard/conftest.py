"""Dashboard fixtures: the end-to-end project and agent (e2e/harness.py), and a throwaway
PostgreSQL for the migrations page."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import agent, project, router_kind
from nonstop.migrate.tempdb import TempPostgres, find_pg_bin
from nonstop_testing import require_binary

__all__ = ["agent", "pg_url", "project", "router_kind"]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A private server for one test (the default database is the test's)."""
    initdb = find_pg_bin("initdb") or require_binary("initdb")
    pg_ctl = find_pg_bin("pg_ctl") or require_binary("pg_ctl")
    # Not tmp_path: the server runs as `postgres` when we are root, and tmp_path is root's.
    folder = Path(tempfile.mkdtemp(prefix="nonstop-dash-pg-"))
    server = TempPostgres(folder, initdb, pg_ctl)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
