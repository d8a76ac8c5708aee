"""`[migrations] tool = "alembic"` through a real deploy on a real PostgreSQL: the expand
revision runs before the new release starts, the backfill after it serves, and the contract
waits while the older release is alive; alembic_version is the record throughout."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psycopg
import pytest

from e2e.harness import AgentProcess, Project
from e2e.test_bluegreen import first_deploy
from e2e.test_migrations_deploy import agent_started, columns, database  # noqa: F401
from nonstop.store import live_instances

pytestmark = pytest.mark.slow
pytest.importorskip("alembic")

SAMPLE = Path(__file__).resolve().parents[1] / "migrate_frameworks" / "alembic_project"
REVISIONS = {
    "0001_total_cents.py": (
        None,
        "op.execute(\"SET lock_timeout = '2s'\")\n"
        'op.add_column("orders", sa.Column("total_cents", sa.BigInteger))',
    ),
    "0002_fill_total_cents.py": (
        "backfill",
        'op.execute("UPDATE orders SET total_cents = (total * 100)::bigint '
        'WHERE id BETWEEN 1 AND 100000 AND total_cents IS NULL")',
    ),
    "0003_drop_total.py": (
        "contract",
        'op.execute("SET lock_timeout = \'2s\'")\nop.drop_column("orders", "total")',
    ),
}


def _revision(number: int, phase: str | None, body: str) -> str:
    down = f'"{number - 1:04d}"' if number > 1 else "None"
    marker = f'nonstop_phase = "{phase}"\n' if phase else ""
    code = "\n".join(f"    {line}" for line in body.splitlines())
    return (
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "{number:04d}"\ndown_revision = {down}\n{marker}\n\n'
        f"def upgrade() -> None:\n{code}\n"
    )


def _version(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def test_alembic_deploy_expand_first_backfill_after_contract_waits(
    project: Project,
    agent: AgentProcess,
    database: str,  # noqa: F811
) -> None:
    shutil.copytree(SAMPLE, project.root / "db")
    versions = project.root / "db" / "migrations" / "versions"
    for old in versions.glob("*.py"):
        old.unlink()
    project.write_config(
        extra=f'\n[migrations]\ntool = "alembic"\nproject = "db"\ndatabase_url = "{database}"\n'
    )
    first_deploy(agent_started(agent))
    for number, (name, (phase, body)) in enumerate(REVISIONS.items(), start=1):
        (versions / name).write_text(_revision(number, phase, body))

    done = agent.wait_rollout(agent.deploy("v2")["id"])
    assert done["status"] == "completed", done
    events = [e["message"] for e in agent.call("GET", "/v1/events")]
    assert any("expand migrations applied: 0001" in e for e in events), events
    assert "total_cents" in columns(database)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _version(database) != "0002":
        time.sleep(0.2)
    assert _version(database) == "0002", "the backfill revision ran after the rollout"
    with psycopg.connect(database) as conn:
        missing = conn.execute("SELECT count(*) FROM orders WHERE total_cents IS NULL").fetchone()
    assert missing == (0,)

    # v1 is still warm: the contract revision must wait, naming it
    assert any(release == "v1" for release, _ in live_instances(project.paths.state))
    refused = project.cli("migrate", "complete")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "v1" in refused.stderr + refused.stdout
    # ... and it was the agent that checked the gate, under its deploy lock (decision 0350)
    events = [e["message"] for e in agent.call("GET", "/v1/events")]
    assert "contract migrations: gate checked under the deploy lock" in events, events
    assert _version(database) == "0002"
    assert "total" in columns(database)
