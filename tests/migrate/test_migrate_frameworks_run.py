"""`[migrations] tool = "alembic" | "django"`: nonstop orders, the framework applies, its own
history table says what ran. Against a real PostgreSQL, through each framework's command."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import psycopg
import pytest

from nonstop.config.schema import AppConfig, MigrationsConfig, NonstopConfig
from nonstop.engine import migrations as engine_migrations
from nonstop.migrate.errors import ContractBlocked
from nonstop.migrate.frameworks import run

pytest.importorskip("alembic")
pytest.importorskip("django")

SAMPLES = Path(__file__).resolve().parents[1] / "migrate_frameworks"

ALEMBIC = [
    (None, 'op.create_table("users", sa.Column("id", sa.BigInteger, primary_key=True))'),
    (
        None,
        'op.add_column("users", sa.Column("email", sa.Text))\n'
        'op.add_column("users", sa.Column("old", sa.Text))',
    ),
    ("backfill", 'op.execute("UPDATE users SET email = old WHERE id BETWEEN 1 AND 1000")'),
    ("contract", 'op.drop_column("users", "old")'),
]


def _alembic(root: Path) -> Path:
    project = root / "alembic_project"
    shutil.copytree(SAMPLES / "alembic_project", project)
    versions = project / "migrations" / "versions"
    for old in versions.glob("*.py"):
        old.unlink()
    for number, (phase, body) in enumerate(ALEMBIC, start=1):
        down = f'"{number - 1:04d}"' if number > 1 else "None"
        marker = f'nonstop_phase = "{phase}"\n' if phase else ""
        (versions / f"{number:04d}_r.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f'revision = "{number:04d}"\ndown_revision = {down}\n{marker}\n\n'
            f"def upgrade() -> None:\n{textwrap.indent(body, '    ')}\n"
        )
    return project


def _version(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


async def test_alembic_expand_backfill_contract(tmp_path: Path, database_url: str) -> None:
    project = _alembic(tmp_path)
    settings = MigrationsConfig(tool="alembic", project=str(project), database_url=database_url)
    target = run.resolve(settings, tmp_path)
    state_dir = tmp_path / ".nonstop"

    # the deploy's expand step: both expand revisions, not the backfill after them
    config = NonstopConfig(app=AppConfig(name="app", command="run {port}"), migrations=settings)
    assert await engine_migrations.expand(config, tmp_path, {}) == ["0001", "0002"]
    assert _version(database_url) == "0002"
    # a contract waits for the backfill before it
    with pytest.raises(ContractBlocked, match="backfill 0003 has not run yet"):
        run.run_contract(target, state_dir)
    events: list[tuple[str, str]] = []
    await engine_migrations.backfill(config, tmp_path, {}, lambda *e: events.append(e))
    assert events == [("info", "alembic migration 0003 applied (backfill step)")]
    assert _version(database_url) == "0003"
    assert run.run_step(target, "backfill") == []  # nothing left before the contract
    # no release recorded, nothing alive: the contract runs, through alembic
    assert run.run_contract(target, state_dir) == ["0004"]
    assert _version(database_url) == "0004"
    with psycopg.connect(database_url) as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
            )
        }
    assert columns == {"id", "email"}


def test_django_expand_then_contract(tmp_path: Path, database_url: str) -> None:
    project = tmp_path / "django_project"
    shutil.copytree(SAMPLES / "django_project", project)
    (project / "shop" / "migrations" / "0003_drop_note.py").write_text(
        "from django.db import migrations\n\n"
        'nonstop_phase = "contract"\n\n\n'
        "class Migration(migrations.Migration):\n"
        '    dependencies = [("shop", "0002_customer_name")]\n'
        '    operations = [migrations.RemoveField("order", "note")]\n'
    )
    settings = MigrationsConfig(tool="django", project=str(project), database_url=database_url)
    target = run.resolve(settings, tmp_path)
    assert run.run_step(target, "backfill") == ["shop.0001_initial", "shop.0002_customer_name"]
    assert run.run_contract(target, tmp_path / ".nonstop") == ["shop.0003_drop_note"]
    with psycopg.connect(database_url) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM django_migrations ORDER BY id")]
    assert names == ["0001_initial", "0002_customer_name", "0003_drop_note"]


@pytest.mark.parametrize(
    ("phases", "step", "expected"),
    [
        (["expand", "backfill", "contract"], "expand", ["0"]),
        (["expand", "backfill", "contract"], "backfill", ["0", "1"]),
        (["expand", "backfill", "contract"], "contract", ["0", "1", "2"]),
        (["backfill", "expand"], "expand", []),
        (["contract", "expand"], "backfill", []),
        (["expand", "backfill", "expand", "contract"], "backfill", ["0", "1", "2"]),
    ],
)
def test_step_plan_runs_in_order_and_stops_at_the_first_later_phase(
    phases: list[str], step: run.Step, expected: list[str]
) -> None:
    pending = [run.Pending(str(i), f"f{i}", phase) for i, phase in enumerate(phases)]  # type: ignore[arg-type]
    assert [m.revision for m in run.step_plan(pending, step)] == expected


def test_contract_gate_names_older_releases_and_earlier_work() -> None:
    pending = [run.Pending("a", "fa", "backfill"), run.Pending("b", "fb", "contract")]
    blockers = run.contract_gate(pending, "v2", [("v1", "web-1"), ("v2", "web-2")])
    assert len(blockers) == 2
    assert "instance web-1 of release v1" in blockers[0]
    assert blockers[1] == "backfill a has not run yet; run `nonstop migrate start` first"


def test_cli_start_plan_complete_with_alembic(tmp_path: Path, database_url: str) -> None:
    from click.testing import CliRunner

    from nonstop.cli.migrate import migrate

    project = _alembic(tmp_path)
    toml = tmp_path / "nonstop.toml"
    toml.write_text(
        '[app]\nname = "app"\ncommand = "run {port}"\n\n'
        f'[migrations]\ntool = "alembic"\nproject = "alembic_project"\n'
        f'database_url = "{database_url}"\n'
    )
    cli = CliRunner()
    result = cli.invoke(migrate, ["plan", "--config", str(toml), "--json"])
    assert result.exit_code == 0, result.output
    assert '"phase": "contract"' in result.output
    result = cli.invoke(migrate, ["start", "--config", str(toml), "--json"])
    assert result.exit_code == 0, result.output
    assert '"applied": [\n    "0001",\n    "0002",\n    "0003"\n  ]' in result.output
    result = cli.invoke(migrate, ["complete", "--config", str(toml), "--json"])
    assert result.exit_code == 0, result.output
    assert _version(database_url) == "0004"
    assert project.is_dir()
