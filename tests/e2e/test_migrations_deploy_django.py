"""`[migrations] tool = "django"` through a real deploy of a Django app under load, on a real
PostgreSQL: the expand migration (a nullable column and an index built CONCURRENTLY) runs
before the new release starts while the old one keeps writing to the table, no request
fails, and the contract migration is refused while the old release is warm."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from e2e.harness import AgentProcess, Project
from e2e.test_bluegreen import BackgroundLoad, first_deploy, load, settle
from e2e.test_migrations_deploy import agent_started, database  # noqa: F401
from nonstop.loadgen.report import LoadReport
from nonstop.store import live_instances

pytestmark = pytest.mark.slow
pytest.importorskip("django")
pytest.importorskip("gunicorn")  # the sample app's server (tests/migrate_frameworks/django_web)

WEB = Path(__file__).resolve().parents[1] / "migrate_frameworks" / "django_web"

#: v2 of the app: knows the new column, no longer uses ``legacy``
MODELS_V2 = """from django.db import models


class Customer(models.Model):
    email = models.TextField()
    name = models.TextField(null=True)

    class Meta:
        indexes = [models.Index(fields=["name"], name="customer_name_idx")]
"""
EXPAND = """from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction
    dependencies = [("shop", "0001_initial")]

    operations = [
        migrations.AddField("customer", "name", models.TextField(null=True)),
        AddIndexConcurrently(
            "customer", models.Index(fields=["name"], name="customer_name_idx")
        ),
    ]
"""
CONTRACT = """from django.db import migrations

nonstop_phase = "contract"


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_customer_name")]

    operations = [migrations.RemoveField("customer", "legacy")]
"""


def django_shop(project: Project, server_url: str, name: str) -> str:
    """The Django web shop in the project directory, on its own database; returns its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    shutil.copytree(WEB, project.root, dirs_exist_ok=True)  # app.py is the Django server
    project.write_config(
        extra=(
            f'\n[app.env]\nDATABASE_URL = "{url}"\n'
            '\n[migrations]\ntool = "django"\nproject = "."\n'
            f'settings = "shopweb.settings"\ndatabase_url = "{url}"\n'
        )
    )
    return url


def write_release_2(root: Path) -> None:
    (root / "shop" / "models.py").write_text(MODELS_V2)
    (root / "shop" / "migrations" / "0002_customer_name.py").write_text(EXPAND)
    (root / "shop" / "migrations" / "0003_drop_legacy.py").write_text(CONTRACT)


def applied(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT name FROM django_migrations WHERE app = 'shop' ORDER BY id"
        ).fetchall()
    return [r[0] for r in rows]


def customer_schema(url: str) -> tuple[set[str], bool | None]:
    """The columns of shop_customer, and whether customer_name_idx is valid (None: absent)."""
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'shop_customer'"
        ).fetchall()
        index = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('customer_name_idx')"
        ).fetchone()
    return {c[0] for c in columns}, None if index is None else bool(index[0])


def assert_no_failed_request(bg: BackgroundLoad, at_least: int) -> LoadReport:
    """Every request that reached the app succeeded (no 5xx, reset or timeout), and at least
    ``at_least`` did. A request the generator could not send within its lag budget (every
    connection busy with a slow answer, or the generator itself starved of CPU on a loaded
    machine) is lateness, not a failure of the deploy: it never reached the app, so it is
    shown and not counted. A lock that blocked the app for longer than the migration's
    lock_timeout would fail the migration; one that blocked it for longer than the client's
    timeout would fail requests that were sent: both are still caught."""
    report = bg.report
    assert report is not None
    failed = report.failed - report.not_sent
    bad = [
        (t.second, {str(k): n for k, n in t.counts.items() if n and k != "ok"}, dict(t.groups))
        for t in report.timeline
        if t.failed
    ]
    assert failed == 0, (report.counts, report.status_codes, report.errors, bad)
    assert report.ok >= at_least, report.counts
    if report.not_sent:
        print(f"not sent on time (machine load): {report.not_sent} of {report.scheduled}")
    return report


def test_django_expand_under_load_then_contract_refused_while_warm(
    project: Project,
    agent: AgentProcess,
    database: str,  # noqa: F811
) -> None:
    url = django_shop(project, database, "djshop")
    first_deploy(agent_started(agent))
    assert applied(url) == ["0001_initial"]
    write_release_2(project.root)

    # 100 req/s: the behaviour under traffic (no failed request, the contract refused) on a
    # shared 2-core machine; the 200 req/s goal is benchmarks/bench_django_deploy.py's
    with load(project, rps=100) as bg:
        settle()
        done = agent.wait_rollout(agent.deploy("v2")["id"])
        settle()
    report = assert_no_failed_request(bg, at_least=100)
    assert done["status"] == "completed", done
    assert set(report.groups) == {"v1", "v2"}, report.groups  # both wrote customers
    assert applied(url) == ["0001_initial", "0002_customer_name"]
    columns, valid = customer_schema(url)
    assert {"name", "legacy"} <= columns
    assert valid is True  # built CONCURRENTLY, and finished

    # v1 is warm (keep_previous): dropping the column it still writes must be refused
    assert any(release == "v1" for release, _ in live_instances(project.paths.state))
    refused = project.cli("migrate", "complete")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "v1" in refused.stderr + refused.stdout
    assert applied(url) == ["0001_initial", "0002_customer_name"]
    assert "legacy" in customer_schema(url)[0]
