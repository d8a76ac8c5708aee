"""``nonstop migrate lint --format json FILE.sql``: run without click (nonstop.cli.lint_fast),
with the same output and exit code as the click command; anything else goes through click."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nonstop.cli import lint_fast
from nonstop.cli.app import cli
from nonstop.cli.main import main

CLEAN = "SET lock_timeout = '1s';\nALTER TABLE users ADD COLUMN nick text;\n"
HAZARD = "SET lock_timeout = '1s';\nALTER TABLE users RENAME COLUMN email TO mail;\n"
TYPE_CHANGE = "ALTER TABLE t ALTER COLUMN c TYPE varchar(300);\nCREATE INDEX i ON t (c);\n"
BROKEN = "SET lock_timeout = '1s';\nALTER TABLE users ADD COLUM x int;\n"


@pytest.mark.parametrize(
    ("args", "taken"),
    [
        (["migrate", "lint", "--format", "json", "a.sql"], True),
        (["migrate", "lint", "--format=json", "a.sql", "b.sql"], True),
        (["migrate", "lint", "--json", "--phase", "contract", "a.sql"], True),
        (["migrate", "lint", "--json", "--pg-version=10", "--assume-lock-timeout", "a.sql"], True),
        (["migrate", "lint", "--json", "--offline", "a.sql"], True),
        (["migrate", "lint", "a.sql"], False),  # human output
        (["migrate", "lint", "--format", "github", "a.sql"], False),
        (["migrate", "lint", "--json", "--fix", "a.sql"], False),
        (["migrate", "lint", "--json", "--pg-version", "8", "a.sql"], False),  # click's error
        (["migrate", "lint", "--json", "--phase", "later", "a.sql"], False),
        (["migrate", "lint", "--json", "--format", "json", "--format", "json", "a.sql"], False),
        (["migrate", "lint", "--json", "--database-url", "postgresql://x", "a.sql"], False),
        (["migrate", "lint", "--json", "--since", "main", "a.sql"], False),
        (["migrate", "lint", "--json", "--help"], False),
        (["migrate", "lint", "--json"], False),  # the default directory or nonstop.toml's project
        (["migrate", "lint", "--json", "missing.sql"], False),  # click's error
        (["migrate", "lint", "--json", "migrations"], False),  # a directory
        (["migrate", "lint", "--json", "alembic.ini"], False),
        (["migrate", "lint", "--json", "--", "a.sql"], False),
        (["migrate", "status"], False),
        (["lint", "--json", "a.sql"], False),
    ],
)  # fmt: skip
def test_only_a_plain_json_lint_of_sql_files_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], taken: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a.sql", "b.sql", "alembic.ini"):
        (tmp_path / name).write_text(CLEAN, encoding="utf-8")
    (tmp_path / "migrations").mkdir()
    assert (lint_fast.parse(args) is not None) is taken


def test_a_nonstop_toml_leaves_the_run_to_click_unless_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config may name a database whose catalog the lint reads."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.sql").write_text(CLEAN, encoding="utf-8")
    (tmp_path / "nonstop.toml").write_text("[migrations]\ndatabase_url = '$DB'\n")
    assert lint_fast.parse(["migrate", "lint", "--json", "a.sql"]) is None
    assert lint_fast.parse(["migrate", "lint", "--json", "--offline", "a.sql"]) is not None


def _files(tmp_path: Path) -> dict[str, list[str]]:
    texts = {"clean": CLEAN, "hazard": HAZARD, "type": TYPE_CHANGE, "broken": BROKEN}
    paths = {}
    for name, text in texts.items():
        path = tmp_path / f"0001_{name}.sql"
        path.write_text(text, encoding="utf-8")
        paths[name] = [str(path)]
    latin = tmp_path / "0002_latin1.sql"
    latin.write_bytes("SELECT 'café';\n".encode("latin-1"))
    paths["not utf-8"] = [str(latin)]
    paths["two files"] = paths["type"] + paths["hazard"]
    return paths


@pytest.mark.parametrize(
    "options",
    [
        ["--format", "json"],
        ["--json", "--phase", "contract"],
        ["--json", "--pg-version", "10"],
        ["--format=json", "--assume-lock-timeout", "--offline"],
    ],
)
def test_same_output_and_exit_code_as_the_click_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, paths in _files(tmp_path).items():
        args = ["migrate", "lint", *options, *paths]
        assert lint_fast.parse(args) is not None, name
        with pytest.raises(SystemExit) as exited:
            main(args)
        fast = capsys.readouterr()
        through_click = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert exited.value.code == through_click.exit_code, name
        assert fast.out == through_click.stdout, name
        assert fast.err == through_click.stderr, name
