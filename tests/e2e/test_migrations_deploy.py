"""Schema changes travel with a deploy (invariant 6), on a real PostgreSQL: expand runs before
any instance of the new release starts, backfill after the rollout, and contract waits until no
instance of the older release is alive."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from e2e.harness import AgentProcess, Project
from e2e.test_bluegreen import first_deploy
from nonstop.migrate.tempdb import CANDIDATE_BIN_DIRS, TempPostgres
from nonstop.store import live_instances
from nonstop_testing import require_binary

pytestmark = pytest.mark.slow

EXPAND = """-- nonstop: phase=expand
SET lock_timeout = '2s';
ALTER TABLE orders ADD COLUMN total_cents bigint;
"""
BACKFILL = """-- nonstop: phase=backfill table=orders key=id batch=100
UPDATE orders SET total_cents = (total * 100)::bigint
 WHERE id BETWEEN :lo AND :hi AND total_cents IS NULL;
"""
CONTRACT = """-- nonstop: phase=contract
SET lock_timeout = '2s';
ALTER TABLE orders DROP COLUMN total;
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    initdb = require_binary("initdb", *(f"{d}/initdb" for d in CANDIDATE_BIN_DIRS))
    pg_ctl = require_binary("pg_ctl", *(f"{d}/pg_ctl" for d in CANDIDATE_BIN_DIRS))
    root = Path(tempfile.mkdtemp(prefix="nonstop-pg-"))
    server = TempPostgres(root, initdb, pg_ctl)
    server.start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric NOT NULL)")
            conn.execute(
                "INSERT INTO orders (total) SELECT g / 10.0 FROM generate_series(1, 1000) g"
            )
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def columns(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'"
        ).fetchall()
    return {r[0] for r in rows}


def test_deploy_runs_expand_first_backfill_after_and_contract_waits(
    project: Project, agent: AgentProcess, database: str
) -> None:
    project.write_config(extra=f'\n[migrations]\ndir = "migrations"\ndatabase_url = "{database}"\n')
    migrations = project.root / "migrations"
    migrations.mkdir()
    first_deploy(agent_started(agent))
    (migrations / "0001_add_total_cents.sql").write_text(EXPAND)
    (migrations / "0002_fill_total_cents.sql").write_text(BACKFILL)
    (migrations / "0003_drop_total.sql").write_text(CONTRACT)

    done = agent.wait_rollout(agent.deploy("v2")["id"])
    assert done["status"] == "completed", done
    assert "total_cents" in columns(database)  # expand ran before v2 started
    events = [e["message"] for e in agent.call("GET", "/v1/events")]
    assert any("expand migrations applied: 0001_add_total_cents" in e for e in events), events
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(database) as conn:
            missing = conn.execute(
                "SELECT count(*) FROM orders WHERE total_cents IS NULL"
            ).fetchone()
        if missing == (0,):
            break
        time.sleep(0.2)
    assert missing == (0,), "the backfill ran after the rollout"

    # v1 is still warm (keep_previous): the contract must refuse, naming the live instances.
    assert any(release == "v1" for release, _ in live_instances(project.paths.state))
    refused = project.cli("migrate", "complete", "--database-url", database)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "v1" in refused.stderr + refused.stdout
    assert "total" in columns(database)
    # It went through the agent: gate and run under the deploy lock (decision 0350).
    events = [e["message"] for e in agent.call("GET", "/v1/events")]
    assert "contract migrations: gate checked under the deploy lock" in events
    assert not agent.status()["contract_running"]


def agent_started(agent: AgentProcess) -> AgentProcess:
    agent.start()
    return agent


SLOW_CONTRACT = """-- nonstop: phase=contract
SET lock_timeout = '2s';
SELECT pg_sleep(3);
ALTER TABLE orders ADD COLUMN IF NOT EXISTS gate_probe int;
ALTER TABLE orders DROP COLUMN gate_probe;
"""


def test_no_deploy_starts_while_a_contract_runs(
    project: Project, agent: AgentProcess, database: str
) -> None:
    """Decision 0350: the agent runs gate and contract under its deploy lock."""
    project.write_config(extra=f'\n[migrations]\ndir = "migrations"\ndatabase_url = "{database}"\n')
    migrations = project.root / "migrations"
    migrations.mkdir()
    (migrations / "0001_slow_contract.sql").write_text(SLOW_CONTRACT)
    first_deploy(agent_started(agent))
    env = {**os.environ, "NONSTOP_PROJECT": str(project.root)}
    contract = subprocess.Popen(
        [sys.executable, "-m", "nonstop.cli", "migrate", "complete"],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not agent.status()["contract_running"]:
            assert contract.poll() is None, contract.communicate()
            assert time.monotonic() < deadline, "the contract never ran in the agent"
            time.sleep(0.05)
        refused = project.cli("deploy", "v2")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "a contract migration is running" in refused.stderr
        out, err = contract.communicate(timeout=60)
        assert contract.returncode == 0, out + err
        assert "0001_slow_contract" in out + err
    finally:
        if contract.poll() is None:
            contract.kill()
            contract.communicate()
    assert [r["candidate"] for r in agent.call("GET", "/v1/rollouts")] == ["v1"]
