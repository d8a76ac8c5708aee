"""Alembic and Django migrations through `nonstop migrate lint`: the frameworks render their
own SQL (Alembic offline mode, Django's sqlmigrate machinery), the SQL rules judge it, and
each finding lands on the operation's line in the migration file.

One table per framework: every case is one migration of one chain, rendered and linted in a
single run; the line marked ``#!`` is where the case's findings must be (none for a safe case).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from nonstop.cli.migrate import migrate
from nonstop.migrate.frameworks import detect, lint_project
from nonstop.migrate.lint import FileResult, LintOptions

pytest.importorskip("alembic")
pytest.importorskip("django")

SAMPLES = Path(__file__).resolve().parents[1] / "migrate_frameworks"

# -- Alembic ---------------------------------------------------------------------------------

ALEMBIC_BASE = """
    op.execute("SET lock_timeout = '2s'")
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("code", sa.Text),
        sa.Column("old", sa.Text),
        sa.Column("gone", sa.Text),
    )
    op.create_index("users_email", "users", ["email"])
    op.create_table("accounts", sa.Column("id", sa.BigInteger, primary_key=True))
    op.create_table("scratch", sa.Column("id", sa.BigInteger, primary_key=True))
    op.add_column("users", sa.Column("account_id", sa.BigInteger))
"""

# (case id, phase marker or None, body of upgrade(), expected rules at the #! line)
ALEMBIC_CASES: list[tuple[str, str | None, str, set[str]]] = [
    (
        "create_index",
        None,
        'op.create_index("users_name", "users", ["name"])  #!',
        {"create-index-without-concurrently"},
    ),
    (
        "create_index_concurrently",
        None,
        """
        with op.get_context().autocommit_block():
            op.create_index(
                "users_code", "users", ["code"], postgresql_concurrently=True
            )
        """,
        set(),
    ),
    (
        "concurrently_in_transaction",
        None,
        'op.create_index("users_old", "users", ["old"], postgresql_concurrently=True)  #!',
        {"concurrently-in-transaction"},
    ),
    (
        "drop_index",
        None,
        'op.drop_index("users_email", "users")  #!',
        {"drop-index-without-concurrently"},
    ),
    (
        "add_column_not_null",
        None,
        'op.add_column("users", sa.Column("age", sa.Integer, nullable=False))  #!',
        {"add-column-not-null"},
    ),
    ("add_column_nullable", None, 'op.add_column("users", sa.Column("bio", sa.Text))', set()),
    (
        "volatile_default",
        None,
        """op.add_column(  #!
            "users", sa.Column("score", sa.Float, server_default=sa.text("random()"))
        )""",
        {"volatile-default"},
    ),
    (
        "set_not_null",
        None,
        'op.alter_column("users", "name", nullable=False)  #!',
        {"set-not-null"},
    ),
    (
        "change_type",
        None,
        'op.alter_column("users", "email", type_=sa.Integer, postgresql_using="0")  #!',
        {"change-column-type"},
    ),
    (
        "rename_column",
        None,
        'op.alter_column("users", "old", new_column_name="older")  #!',
        {"rename-column"},
    ),
    ("rename_table", None, 'op.rename_table("scratch", "scratch2")  #!', {"rename-table"}),
    ("drop_column", None, 'op.drop_column("users", "code")  #!', {"drop-column"}),
    ("drop_column_contract", "contract", 'op.drop_column("users", "gone")', set()),
    (
        "foreign_key",
        None,
        'op.create_foreign_key("users_account", "users", "accounts", ["account_id"], ["id"])  #!',
        {"foreign-key-without-not-valid"},
    ),
    (
        "check",
        None,
        'op.create_check_constraint("users_name_len", "users", "length(name) < 100")  #!',
        {"check-without-not-valid"},
    ),
    (
        "unique",
        None,
        'op.create_unique_constraint("users_email_key", "users", ["email"])  #!',
        {"unique-without-index"},
    ),
    (
        "update_in_expand",
        None,
        "op.execute(\"UPDATE users SET name = '' WHERE name IS NULL\")  #!",
        {"dml-outside-backfill"},
    ),
    (
        "batched_backfill",
        "backfill",
        "op.execute(\"UPDATE users SET name = '' WHERE id BETWEEN 1 AND 1000\")",
        set(),
    ),
    (
        "ddl_in_backfill",
        "backfill",
        'op.add_column("users", sa.Column("x", sa.Text))  #!',
        {"backfill-ddl"},
    ),
    (
        "ignored_with_reason",
        None,
        'op.create_index("users_x", "users", ["name"])  '
        '# nonstop-lint: ignore=create-index-without-concurrently reason="20 rows"',
        set(),
    ),
]


def _alembic_revision(number: int, phase: str | None, body: str) -> str:
    down = f'"{number - 1:04d}"' if number > 1 else "None"
    marker = f'nonstop_phase = "{phase}"\n' if phase else ""
    code = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return (
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "{number:04d}"\ndown_revision = {down}\n{marker}\n\n'
        f"def upgrade() -> None:\n{code}\n\n\ndef downgrade() -> None:\n    pass\n"
    )


def alembic_project(root: Path, bodies: list[tuple[str | None, str]]) -> Path:
    project = root / "alembic_project"
    shutil.copytree(SAMPLES / "alembic_project", project)
    versions = project / "migrations" / "versions"
    for old in versions.glob("*.py"):
        old.unlink()
    for number, (phase, body) in enumerate(bodies, start=1):
        (versions / f"{number:04d}_case.py").write_text(
            _alembic_revision(number, phase, body), encoding="utf-8"
        )
    return project


def _marked(path: Path) -> int | None:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if "#!" in line:
            return number
    return None


def _by_file(results: list[FileResult]) -> dict[str, set[tuple[str, int]]]:
    return {Path(r.source.path).name: {(f.rule, f.line) for f in r.findings} for r in results}


@pytest.fixture(scope="module")
def alembic_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[tuple[str, int]]]:
    bodies = [(None, ALEMBIC_BASE)] + [(phase, body) for _, phase, body, _ in ALEMBIC_CASES]
    project = alembic_project(tmp_path_factory.mktemp("alembic"), bodies)
    found = detect(project, None, None)
    assert found is not None
    results = lint_project(found, LintOptions(), python=sys.executable)
    by_file = _by_file(results)
    by_file["__dir__"] = {("", 0)}
    by_file["__project__"] = {(str(project), 0)}
    return by_file


@pytest.mark.parametrize(
    ("number", "case"),
    [(n, c) for n, c in enumerate(ALEMBIC_CASES, start=2)],
    ids=[c[0] for c in ALEMBIC_CASES],
)
def test_alembic_operation_to_rule_and_line(
    alembic_results: dict[str, set[tuple[str, int]]],
    number: int,
    case: tuple[str, str | None, str, set[str]],
) -> None:
    _, _, _, rules = case
    project = Path(next(iter(alembic_results["__project__"]))[0])
    path = project / "migrations" / "versions" / f"{number:04d}_case.py"
    line = _marked(path)
    assert alembic_results[path.name] == {(rule, line) for rule in rules}


def test_alembic_base_revision_is_clean(alembic_results: dict[str, set[tuple[str, int]]]) -> None:
    # new tables, and an index on a table created in the same revision: nothing to report;
    # its SET lock_timeout carries to the revisions after it (no missing-lock-timeout there)
    assert alembic_results["0001_case.py"] == set()


# -- Django ----------------------------------------------------------------------------------

DJANGO_BASE = """
    migrations.RunSQL("SET lock_timeout = '2s'", migrations.RunSQL.noop),
    migrations.CreateModel(
        name="Customer",
        fields=[
            ("id", models.BigAutoField(primary_key=True, serialize=False)),
            ("email", models.TextField()),
            ("f1", models.TextField(null=True)),
            ("f2", models.TextField(null=True)),
            ("f3", models.TextField(null=True)),
            ("f4", models.TextField(null=True)),
            ("f5", models.TextField(null=True)),
            ("f6", models.TextField(null=True)),
            ("code", models.TextField(null=True)),
        ],
    ),
    migrations.CreateModel(
        name="Account",
        fields=[("id", models.BigAutoField(primary_key=True, serialize=False))],
    ),
    migrations.CreateModel(
        name="Note",
        fields=[("id", models.BigAutoField(primary_key=True, serialize=False))],
    ),
    migrations.CreateModel(
        name="Scratch",
        fields=[("id", models.BigAutoField(primary_key=True, serialize=False))],
    ),
"""

# (case id, phase marker or None, atomic, operations, expected rules at the #! line)
DJANGO_CASES: list[tuple[str, str | None, bool, str, set[str]]] = [
    (
        "add_index",
        None,
        True,
        'migrations.AddIndex("customer", models.Index(fields=["f1"], name="c_f1")),  #!',
        {"create-index-without-concurrently"},
    ),
    (
        "add_index_concurrently",
        None,
        False,
        'AddIndexConcurrently("customer", models.Index(fields=["f2"], name="c_f2")),',
        set(),
    ),
    (
        "concurrently_in_atomic_migration",
        None,
        True,
        'AddIndexConcurrently("customer", models.Index(fields=["f3"], name="c_f3")),  #!',
        {"concurrently-in-transaction"},
    ),
    (
        "remove_index",
        None,
        True,
        'migrations.RemoveIndex("customer", "c_f1"),  #!',
        {"drop-index-without-concurrently"},
    ),
    (
        "add_field_not_null",
        None,
        True,
        'migrations.AddField("customer", "age", models.IntegerField()),  #!',
        {"add-column-not-null"},
    ),
    (
        "add_field_default_then_dropped",
        None,
        True,
        'migrations.AddField("customer", "flag", models.BooleanField(default=False)),  #!',
        {"add-column-not-null"},
    ),
    (
        "add_field_db_default",
        None,
        True,
        'migrations.AddField("customer", "flag2", models.BooleanField(db_default=False)),',
        set(),
    ),
    (
        "add_field_nullable",
        None,
        True,
        'migrations.AddField("customer", "bio", models.TextField(null=True)),',
        set(),
    ),
    (
        "alter_field_not_null",
        None,
        True,
        'migrations.AlterField("customer", "f4", models.TextField()),  #!',
        {"set-not-null"},
    ),
    (
        "alter_field_type",
        None,
        True,
        'migrations.AlterField("customer", "f5", models.IntegerField(null=True)),  #!',
        {"change-column-type"},
    ),
    (
        "rename_field",
        None,
        True,
        'migrations.RenameField("customer", "bio", "about"),  #!',
        {"rename-column"},
    ),
    (
        "rename_model",
        None,
        True,
        'migrations.RenameModel("Note", "Memo"),  #!',
        {"rename-table"},
    ),
    (
        "remove_field",
        None,
        True,
        'migrations.RemoveField("customer", "about"),  #!',
        {"drop-column"},
    ),
    (
        "remove_field_contract",
        "contract",
        True,
        'migrations.RemoveField("customer", "f6"),',
        set(),
    ),
    (
        "add_foreign_key",
        None,
        True,
        """migrations.AddField(  #!
            "customer",
            "account",
            models.ForeignKey(null=True, on_delete=models.CASCADE, to="shop.account"),
        ),""",
        {"foreign-key-without-not-valid", "create-index-without-concurrently"},
    ),
    (
        "add_check",
        None,
        True,
        """migrations.AddConstraint(  #!
            "customer",
            models.CheckConstraint(condition=models.Q(f2__gt=""), name="c_f2_set"),
        ),""",
        {"check-without-not-valid"},
    ),
    (
        "add_check_not_valid",
        None,
        True,
        """AddConstraintNotValid(
            "customer",
            models.CheckConstraint(condition=models.Q(f3__gt=""), name="c_f3_set"),
        ),""",
        set(),
    ),
    (
        "add_unique",
        None,
        True,
        """migrations.AddConstraint(  #!
            "customer", models.UniqueConstraint(fields=["code"], name="c_code_key")
        ),""",
        {"unique-without-index"},
    ),
    (
        "update_in_expand",
        None,
        True,
        "migrations.RunSQL(\"UPDATE shop_customer SET f1 = '' WHERE f1 IS NULL\"),  #!",
        {"dml-outside-backfill"},
    ),
    (
        "batched_backfill",
        "backfill",
        True,
        "migrations.RunSQL(\"UPDATE shop_customer SET f1 = '' WHERE id BETWEEN 1 AND 1000\"),",
        set(),
    ),
    ("delete_model", None, True, 'migrations.DeleteModel("Scratch"),  #!', {"drop-table"}),
]


def _django_migration(number: int, phase: str | None, atomic: bool, ops: str) -> str:
    deps = f'[("shop", "{number - 1:04d}_case")]' if number > 1 else "[]"
    marker = f'nonstop_phase = "{phase}"\n\n' if phase else ""
    body = textwrap.indent(textwrap.dedent(ops).strip("\n"), "        ")
    return (
        "from django.contrib.postgres.operations import AddConstraintNotValid, "
        "AddIndexConcurrently\nfrom django.db import migrations, models\n\n"
        f"{marker}\nclass Migration(migrations.Migration):\n"
        f"    atomic = {atomic}\n    dependencies = {deps}\n\n"
        f"    operations = [\n{body}\n    ]\n"
    )


def django_project(root: Path, migrations: list[tuple[str | None, bool, str]]) -> Path:
    project = root / "django_project"
    shutil.copytree(SAMPLES / "django_project", project)
    folder = project / "shop" / "migrations"
    for old in folder.glob("0*.py"):
        old.unlink()
    for number, (phase, atomic, ops) in enumerate(migrations, start=1):
        (folder / f"{number:04d}_case.py").write_text(
            _django_migration(number, phase, atomic, ops), encoding="utf-8"
        )
    return project


@pytest.fixture(scope="module")
def django_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[tuple[str, int]]]:
    migrations = [(None, True, DJANGO_BASE)] + [(p, a, ops) for _, p, a, ops, _ in DJANGO_CASES]
    project = django_project(tmp_path_factory.mktemp("django"), migrations)
    found = detect(project, None, None)
    assert found is not None
    # Django's migrations run one per transaction: no session lock_timeout is carried over
    options = LintOptions(assume_lock_timeout=True)
    by_file = _by_file(lint_project(found, options, python=sys.executable))
    by_file["__project__"] = {(str(project), 0)}
    return by_file


@pytest.mark.parametrize(
    ("number", "case"),
    [(n, c) for n, c in enumerate(DJANGO_CASES, start=2)],
    ids=[c[0] for c in DJANGO_CASES],
)
def test_django_operation_to_rule_and_line(
    django_results: dict[str, set[tuple[str, int]]],
    number: int,
    case: tuple[str, str | None, bool, str, set[str]],
) -> None:
    rules = case[4]
    project = Path(next(iter(django_results["__project__"]))[0])
    path = project / "shop" / "migrations" / f"{number:04d}_case.py"
    assert django_results[path.name] == {(rule, _marked(path)) for rule in rules}


# -- the command line: exit codes, errors, --since, the cache ---------------------------------


def _lint(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(migrate, ["lint", *args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.output


def _logging_python(root: Path) -> tuple[Path, Path]:
    """An interpreter wrapper that appends a line to a log each time it is started."""
    log = root / "python.log"
    wrapper = root / "python"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{log}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def test_alembic_cli_json_cache_and_since(tmp_path: Path) -> None:
    project = alembic_project(
        tmp_path,
        [(None, ALEMBIC_BASE), (None, 'op.create_index("users_name", "users", ["name"])')],
    )
    python, log = _logging_python(tmp_path)
    code, out = _lint([str(project), "--json", "--python", str(python)])
    assert code == 1
    findings = json.loads(out)
    assert [(f["rule"], Path(f["file"]).name, f["line"]) for f in findings] == [
        ("create-index-without-concurrently", "0002_case.py", 9)
    ]
    assert "autocommit_block" in findings[0]["fix"]
    assert findings[0]["autofix"] is None
    # nothing changed: the rendered SQL comes from the cache, no Python is started
    assert _lint([str(project), "--json", "--python", str(python)])[0] == 1
    assert log.read_text().count("run") == 1
    # a changed revision is rendered again
    third = project / "migrations" / "versions" / "0003_case.py"
    third.write_text(_alembic_revision(3, "contract", 'op.drop_column("users", "gone")'))
    assert _lint([str(project), "--json", "--python", str(python)])[0] == 1
    assert log.read_text().count("run") == 2
    # only what is new since a commit, or after a revision
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(project)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    assert _lint([str(project), "--json", "--since", "HEAD"]) == (0, "[]\n")
    fourth = project / "migrations" / "versions" / "0004_case.py"
    fourth.write_text(_alembic_revision(4, None, 'op.drop_column("users", "old")  #!'))
    code, out = _lint([str(project), "--json", "--since", "HEAD"])
    assert code == 1
    assert {(f["rule"], Path(f["file"]).name) for f in json.loads(out)} == {
        ("drop-column", "0004_case.py")
    }
    code, out = _lint([str(project), "--json", "--since-revision", "0002"])
    assert {Path(f["file"]).name for f in json.loads(out)} == {"0004_case.py"}
    code, out = _lint([str(project), "--since", "no-such-ref"])
    assert code == 2
    assert "--since" in out


@pytest.mark.parametrize(
    ("tool", "breakage", "expected"),
    [
        ("alembic", "import nosuchmodule\n", "0002_case.py:6: revision does not import"),
        ("alembic", 'nonstop_phase = "later"\n', "0002_case.py:6: unknown migration phase"),
        ("django", "import nosuchmodule\n", "0002_case.py:6: migration does not import"),
        ("django_settings", "raise RuntimeError('broken')\n", "cannot be loaded"),
        ("django_missing", "", "cannot import django"),
    ],
)
def test_broken_projects_exit_2_naming_the_file(
    tmp_path: Path, tool: str, breakage: str, expected: str
) -> None:
    args = []
    if tool == "alembic":
        project = alembic_project(tmp_path, [(None, ALEMBIC_BASE), (None, "pass")])
        target = project / "migrations" / "versions" / "0002_case.py"
    else:
        project = django_project(tmp_path, [(None, True, DJANGO_BASE), (None, True, "")])
        target = project / "shop" / "migrations" / "0002_case.py"
        if tool == "django_settings":
            target = project / "sampleproj" / "settings.py"
        if tool == "django_missing":
            bare = tmp_path / "bare-python"
            bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
            bare.chmod(0o755)
            args = ["--python", str(bare)]
    lines = target.read_text().splitlines(keepends=True)
    target.write_text("".join([*lines[:5], breakage, *lines[5:]]))
    code, out = _lint([str(project), "--no-cache", *args])
    assert code == 2
    assert expected in out
    assert "Traceback" not in out


def test_django_app_path_and_missing_lock_timeout(tmp_path: Path) -> None:
    project = tmp_path / "django_project"
    shutil.copytree(SAMPLES / "django_project", project)
    code, out = _lint([str(project / "shop" / "migrations"), "--json", "--no-cache"])
    assert code == 1
    found = {(f["rule"], Path(f["file"]).name, f["line"]) for f in json.loads(out)}
    assert found == {
        ("missing-lock-timeout", "0002_customer_name.py", 8),
        ("create-index-without-concurrently", "0002_customer_name.py", 9),
        ("missing-lock-timeout", "0002_customer_name.py", 9),
        ("missing-lock-timeout", "0002_customer_name.py", 10),
        # AddField(default="") then DROP DEFAULT: the running release's INSERTs fail
        ("add-column-not-null", "0002_customer_name.py", 10),
    }


# -- the safe forms run on a real PostgreSQL -------------------------------------------------

SAFE_ALEMBIC = [case for case in ALEMBIC_CASES if not case[3] and "ignore" not in case[2]]
SAFE_DJANGO = [case for case in DJANGO_CASES if not case[4]]


def test_safe_forms_apply_on_postgres(tmp_path: Path, database_url: str) -> None:
    """The advice is real: the operations the linter passes run on PostgreSQL, through each
    framework's own command, and lint clean."""
    bodies = [(None, ALEMBIC_BASE)] + [(phase, body) for _, phase, body, _ in SAFE_ALEMBIC]
    project = alembic_project(tmp_path / "a", bodies)
    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    ini = project / "alembic.ini"
    ini.write_text(ini.read_text().replace("postgresql+psycopg://localhost/sample", url))
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=project, check=True)
    assert _lint([str(project), "--json", "--no-cache", "--since-revision", "0001"]) == (
        0,
        "[]\n",
    )
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (
            f"{len(bodies):04d}",
        )

    ops = [(phase, atomic, body) for _, phase, atomic, body, _ in SAFE_DJANGO]
    project = django_project(tmp_path / "d", [(None, True, DJANGO_BASE), *ops])
    host_port, name = database_url.rsplit("@", 1)[1].split("/")
    host, port = host_port.split(":")
    user = database_url.split("//", 1)[1].split("@", 1)[0]
    env = {
        **__import__("os").environ,
        "SAMPLE_DB_HOST": host,
        "SAMPLE_DB_PORT": port,
        "SAMPLE_DB_NAME": name,
        "SAMPLE_DB_USER": user,
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=project,
        env=env,
        check=True,
    )
    code, out = _lint([str(project), "--json", "--no-cache", "--assume-lock-timeout"])
    assert (code, out) == (0, "[]\n")
    with psycopg.connect(database_url) as conn:
        applied = conn.execute("SELECT count(*) FROM django_migrations").fetchone()
    assert applied == (len(ops) + 1,)


def test_no_paths_lints_the_configured_project_and_since_filters_sql_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = alembic_project(
        tmp_path, [(None, ALEMBIC_BASE), (None, 'op.drop_column("users", "old")')]
    )
    (tmp_path / "nonstop.toml").write_text(
        '[app]\nname = "app"\ncommand = "run {port}"\n\n'
        f'[migrations]\ntool = "alembic"\nproject = "{project.name}"\n'
    )
    monkeypatch.chdir(tmp_path)
    code, out = _lint(["--json", "--no-cache"])
    assert code == 1
    assert [json.loads(out)[0]["rule"], json.loads(out)[0]["line"]] == ["drop-column", 9]

    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_a.sql").write_text("DROP TABLE a;\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    (sql / "0002_b.sql").write_text("CREATE INDEX b_x ON b (x);\n")
    code, out = _lint(["sql", "--json", "--since", "HEAD", "--assume-lock-timeout"])
    assert code == 1
    assert {(Path(f["file"]).name, f["rule"]) for f in json.loads(out)} == {
        ("0002_b.sql", "create-index-without-concurrently")
    }


def test_paths_inside_projects_and_ignores_on_every_statement_of_an_operation(
    tmp_path: Path,
) -> None:
    # Alembic: the versions/ directory finds its alembic.ini
    project = alembic_project(
        tmp_path / "a", [(None, ALEMBIC_BASE), (None, 'op.drop_column("users", "old")')]
    )
    code, out = _lint([str(project / "migrations" / "versions"), "--json", "--no-cache"])
    assert (code, [f["rule"] for f in json.loads(out)]) == (1, ["drop-column"])
    # Django: an app directory means its migrations; an ignore comment above an operation
    # covers every statement it renders (the FK's index comes at the end of the migration)
    fk = """
        # nonstop-lint: ignore=foreign-key-without-not-valid reason="empty table"
        # nonstop-lint: ignore=create-index-without-concurrently reason="empty table"
        migrations.AddField(
            "customer",
            "account",
            models.ForeignKey(null=True, on_delete=models.CASCADE, to="shop.account"),
        ),
        migrations.AddField("customer", "n", models.IntegerField()),  #!
    """
    project = django_project(tmp_path / "d", [(None, True, DJANGO_BASE), (None, True, fk)])
    code, out = _lint([str(project / "shop"), "--json", "--no-cache", "--assume-lock-timeout"])
    path = project / "shop" / "migrations" / "0002_case.py"
    assert code == 1
    assert [(f["rule"], f["line"]) for f in json.loads(out)] == [
        ("add-column-not-null", _marked(path))
    ]


def test_a_trailing_comment_in_executed_sql_does_not_swallow_the_next_statement(
    tmp_path: Path,
) -> None:
    body = """
        op.execute("UPDATE users SET name = '' WHERE id < 10 -- small")
        op.drop_column("users", "old")  #!
    """
    project = alembic_project(tmp_path, [(None, ALEMBIC_BASE), (None, body)])
    code, out = _lint([str(project), "--json", "--no-cache"])
    path = project / "migrations" / "versions" / "0002_case.py"
    assert code == 1
    assert {(f["rule"], f["line"]) for f in json.loads(out)} == {
        ("dml-outside-backfill", _marked(path) - 1),
        ("drop-column", _marked(path)),
    }


_PROBE = """
import sys
from nonstop.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    loaded = sorted({m.split(".")[0] for m in sys.modules} & {"pglast", "alembic", "sqlalchemy"})
    rules = "nonstop.migrate.lint.rules" in sys.modules
    print("LOADED", loaded, rules, exit.code, file=sys.stderr)
"""


def _fresh_lint(project: Path, *args: str) -> tuple[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "migrate", "lint", str(project), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout, proc.stderr.strip().splitlines()[-1]


def test_a_relint_with_nothing_changed_loads_no_parser(tmp_path: Path) -> None:
    project = alembic_project(
        tmp_path,
        [(None, ALEMBIC_BASE), (None, 'op.create_index("users_name", "users", ["name"])')],
    )
    first, loaded = _fresh_lint(project, "--json")
    assert loaded == "LOADED ['pglast'] True 1"  # rendered in another process, linted here
    again, loaded = _fresh_lint(project, "--json")
    assert loaded == "LOADED [] False 1"
    assert again == first
    assert json.loads(again)[0]["rule"] == "create-index-without-concurrently"
    human, loaded = _fresh_lint(project)
    assert loaded == "LOADED [] False 1"
    assert "  9 |     op.create_index" in human  # the offending line, read from the file
    # other options are other verdicts: linted again
    _, loaded = _fresh_lint(project, "--json", "--pg-version", "10")
    assert loaded == "LOADED ['pglast'] True 1"
    # a changed ignore comment is a changed file: linted again
    revision = project / "migrations" / "versions" / "0002_case.py"
    revision.write_text(
        revision.read_text().replace(
            '["name"])',
            '["name"])  # nonstop-lint: ignore=create-index-without-concurrently reason="tiny"',
        )
    )
    out, loaded = _fresh_lint(project, "--json")
    assert loaded == "LOADED ['pglast'] True 0"
    assert out == "[]\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["proj"], ("proj", {})),
        (["proj", "--json", "--no-cache"], ("proj", {"--json": None, "--no-cache": None})),
        (["--python", "py", "proj"], ("proj", {"--python": "py"})),
        (["--cache-dir=c", "p", "--tool", "auto"], ("p", {"--cache-dir": "c", "--tool": "auto"})),
        ([], None),  # the configured project: left to the command
        (["a", "b"], None),  # several paths
        (["proj", "--fix"], None),  # an option the early start does not know
        (["proj", "--since", "HEAD"], None),
        (["proj", "--python"], None),  # a value missing: click says so
    ],
)  # fmt: skip
def test_early_start_reads_only_plain_command_lines(
    args: list[str], expected: tuple[str, dict[str, str | None]] | None
) -> None:
    from nonstop.migrate.frameworks.early import parse

    assert parse(args) == expected


_ENTRY = """
import sys
from nonstop.migrate.frameworks import early
from nonstop.cli.entry import main

seen = []
start, take = early.start, early.take
early.start = lambda args: (seen.append("click" in sys.modules), start(args))
early.take = lambda *a: (lambda s: (seen.append(s is not None), s)[1])(take(*a))
sys.argv = ["nonstop", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    print("SEEN", seen, exit.code, file=sys.stderr)
"""


def test_the_entry_point_starts_rendering_before_the_cli_loads(tmp_path: Path) -> None:
    project = alembic_project(
        tmp_path,
        [(None, ALEMBIC_BASE), (None, 'op.create_index("users_name", "users", ["name"])')],
    )
    python, log = _logging_python(tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}

    def run(*args: str) -> tuple[str, str]:
        proc = subprocess.run(
            [sys.executable, "-c", _ENTRY, "migrate", "lint", str(project), *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        return proc.stdout, proc.stderr.strip().splitlines()[-1]

    out, seen = run("--json", "--python", str(python))
    # started before click was imported, and the lint took that process: one render
    assert seen == "SEEN [False, True] 1"
    assert [f["rule"] for f in json.loads(out)] == ["create-index-without-concurrently"]
    assert log.read_text().count("run") == 1
    # cached: nothing is started early, nor later
    assert run("--json", "--python", str(python)) == (out, "SEEN [False] 1")
    assert log.read_text().count("run") == 1
    # started, then a usage error before the lint: the renderer is stopped, its files removed
    _, seen = run("--no-cache", "--python", str(python), "--pg-version", "3")
    assert seen == "SEEN [False] 2"
    assert log.read_text().count("run") == 2
    assert list(temp.iterdir()) == []
