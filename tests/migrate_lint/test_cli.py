"""``nonstop migrate lint``: exit codes, output formats, --fix, --pg-version, --list-rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from nonstop.cli.migrate_lint import lint
from nonstop.migrate.lint import RULES

CLEAN = "SET lock_timeout = '1s';\nALTER TABLE users ADD COLUMN nick text;\n"
HAZARD = "SET lock_timeout = '1s';\nALTER TABLE users RENAME COLUMN email TO mail;\n"
WARNING_ONLY = "-- nonstop: phase=backfill\nUPDATE users SET nick = name;\n"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(lint, [str(a) for a in args], catch_exceptions=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "code"), [(CLEAN, 0), (HAZARD, 1), (WARNING_ONLY, 0)])
def test_exit_codes(tmp_path: Path, text: str, code: int) -> None:
    assert run(write(tmp_path, "0001.sql", text)).exit_code == code


def test_parse_error_exits_2_with_parser_message_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "0001.sql", "SET lock_timeout = '1s';\nALTER TABLE users ADD COLUM x int;\n"
    )
    result = run(path)
    assert result.exit_code == 2
    assert f'error: {path}:2:31: SQL does not parse: syntax error at or near "int"' in result.stderr
    assert "2 | ALTER TABLE users ADD COLUM x int;" in result.stderr


DEEP = "SELECT " + " + ".join(["1"] * 1200)  # valid SQL; its tree nests ~3,600 levels deep


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (f"{DEEP};\n", 1),
        (f"SELECT 1;\nCREATE INDEX i ON t (a);\n{DEEP};\n", 3),
        (f"-- nonstop: ignore\nALTER TABLE t ADD COLUMN a int;\n\n{DEEP};\nSELECT 2;\n", 4),
    ],
)
def test_a_statement_nested_too_deeply_to_read_exits_2_naming_its_line(
    tmp_path: Path, text: str, where: int
) -> None:
    path = write(tmp_path, "0001.sql", text)
    for fmt in ("human", "json"):
        result = run("--format", fmt, path)
        assert result.exit_code == 2, result.output
        assert result.stderr == (
            f"error: {path}:{where}: this statement nests too deeply for the linter to read "
            "(hundreds of nested operators, parentheses or brackets): nothing in this file was "
            "linted; split the expression into smaller ones\n"
        )


def test_unterminated_input_exits_2(tmp_path: Path) -> None:
    result = run(write(tmp_path, "0001.sql", "CREATE TABLE t (id int"))
    assert result.exit_code == 2
    assert "syntax error at end of input" in result.stderr


def test_missing_path_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path / "nope.sql")
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.sql'}: no such file or directory\n"


def test_not_utf8_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "0001.sql"
    path.write_bytes(b"SELECT '\xff';\n")
    result = run(path)
    assert result.exit_code == 2
    assert "not UTF-8 text" in result.stderr


def test_bad_pg_version_exits_2(tmp_path: Path) -> None:
    result = run("--pg-version", "sixteen", write(tmp_path, "0001.sql", CLEAN))
    assert result.exit_code == 2
    assert "--pg-version: expected a PostgreSQL version" in result.stderr


def test_json_schema(tmp_path: Path) -> None:
    path = write(tmp_path, "0001.sql", HAZARD + "CREATE INDEX i ON users (a);\n")
    result = run("--format", "json", path)
    assert result.exit_code == 1
    findings = json.loads(result.stdout)
    assert [(f["rule"], f["line"], f["column"]) for f in findings] == [
        ("rename-column", 2, 1),
        ("create-index-without-concurrently", 3, 1),
    ]
    types = {"rule": str, "severity": str, "file": str, "line": int, "column": int,
             "message": str, "fix": str}  # fmt: skip
    for finding in findings:
        assert set(finding) == {*types, "autofix"}
        assert all(isinstance(finding[key], kind) for key, kind in types.items())
        assert finding["severity"] in ("error", "warning")
        assert finding["file"] == str(path)
    assert findings[0]["autofix"] is None
    assert findings[1]["autofix"] == "CREATE INDEX CONCURRENTLY i ON users (a)"


def test_json_is_an_empty_list_when_clean(tmp_path: Path) -> None:
    result = run("--json", write(tmp_path, "0001.sql", CLEAN))
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


def test_github_annotations(tmp_path: Path) -> None:
    path = write(
        tmp_path, "0001.sql", HAZARD + WARNING_ONLY.replace("-- nonstop: phase=backfill\n", "")
    )
    result = run("--format", "github", path)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        f"::error file={path},line=2,col=1,title=rename-column::renaming column email"
    )
    assert lines[1].startswith(
        f"::warning file={path},line=3,col=1,title=dml-outside-backfill::UPDATE of users"
    )
    assert "Fix: " in lines[0]
    assert len(lines) == 2


def test_human_output_shows_the_offending_line(tmp_path: Path) -> None:
    path = write(tmp_path, "0001.sql", HAZARD)
    result = run(path)
    assert f"{path}:2:1: error [rename-column] (phase expand)" in result.stdout
    assert "   2 | ALTER TABLE users RENAME COLUMN email TO mail;" in result.stdout
    assert "fix: expand: add the new column mail" in result.stdout
    assert "1 error, 0 warnings in 1 file (2 statements)" in result.stdout


def test_directory_lints_every_file_with_its_phase(tmp_path: Path) -> None:
    write(tmp_path, "m/0001_add.sql", CLEAN)
    write(
        tmp_path,
        "m/contract/0002_drop.sql",
        "SET lock_timeout = '1s';\nALTER TABLE users DROP COLUMN email;\n",
    )
    write(
        tmp_path,
        "m/0003_drop.sql",
        "SET lock_timeout = '1s';\nALTER TABLE users DROP COLUMN name;\n",
    )
    result = run("--json", tmp_path / "m")
    assert [(Path(f["file"]).name, f["rule"]) for f in json.loads(result.stdout)] == [
        ("0003_drop.sql", "drop-column")
    ]
    assert run("--json", "--phase", "contract", tmp_path / "m").exit_code == 0


def test_pg_version_changes_the_verdict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "0001.sql",
        "SET lock_timeout = '1s';\nALTER TABLE t ADD COLUMN n int DEFAULT 0;\n",
    )
    assert run(path).exit_code == 0
    result = run("--pg-version", "10.4", "--json", path)
    assert [f["rule"] for f in json.loads(result.stdout)] == ["add-column-default"]


def test_fix_rewrites_the_file_and_then_passes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "0001.sql",
        "CREATE INDEX i ON users (a);\nALTER TABLE users ALTER a SET NOT NULL;\n",
    )
    result = run("--fix", "--json", path)
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])
    assert result.stderr == "fixed 1 file; findings after the fix:\n"
    assert path.read_text().startswith(
        "SET lock_timeout = '2s';\nCREATE INDEX CONCURRENTLY i ON users (a);\n"
    )
    assert run(path).exit_code == 0


def test_list_rules_json() -> None:
    result = run("--list-rules", "--json")
    listed = json.loads(result.stdout)
    assert [r["rule"] for r in listed] == sorted(RULES)
    assert {"rule": "truncate", "severity": "error",
            "description": "TRUNCATE empties a table under ACCESS EXCLUSIVE"} in listed  # fmt: skip


def test_console_script_exit_code(tmp_path: Path) -> None:
    """The real process: exit status 1 reaches the shell (standalone click, no runner)."""
    path = write(tmp_path, "0001.sql", HAZARD)
    code = "from nonstop.cli.migrate_lint import lint; lint()"
    done = subprocess.run(
        [sys.executable, "-c", code, "--format", "github", str(path)],
        capture_output=True, text=True, check=False, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.startswith(f"::error file={path},line=2,col=1,title=rename-column::")


def test_docs_page_lists_every_rule() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "migrations-lint.md").read_text()
    missing = [rule for rule in RULES if f"`{rule}`" not in page]
    assert missing == []


def test_human_output_on_a_terminal_is_coloured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    result = run(write(tmp_path, "0001.sql", HAZARD))
    assert "\x1b[" in result.stdout
    assert "[rename-column]" in result.stdout
    assert "ALTER TABLE users RENAME COLUMN email TO mail;" in result.stdout


def test_no_paths_and_no_migrations_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run()
    assert result.exit_code == 2
    assert result.stderr == "error: no paths given and there is no migrations/ directory here\n"


def test_no_paths_lints_migrations_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "migrations/0001.sql", HAZARD)
    monkeypatch.chdir(tmp_path)
    result = run("--json")
    assert result.exit_code == 1
    assert [f["file"] for f in json.loads(result.stdout)] == ["migrations/0001.sql"]


def test_through_the_nonstop_entry_point(tmp_path: Path) -> None:
    """`nonstop migrate lint` as users type it: the migrate group registers this command."""
    from nonstop.cli.main import cli

    path = write(tmp_path, "0001.sql", HAZARD)
    result = CliRunner().invoke(
        cli, ["migrate", "lint", "--json", str(path)], standalone_mode=False
    )
    assert result.return_value == 1
    assert [f["rule"] for f in json.loads(result.stdout)] == ["rename-column"]


def test_assume_lock_timeout(tmp_path: Path) -> None:
    """nonstop's runner sets lock_timeout itself: the flag drops that requirement, nothing else."""
    path = write(
        tmp_path, "0001.sql", "ALTER TABLE users ADD a int;\nCREATE INDEX i ON users (a);\n"
    )
    assert [f["rule"] for f in json.loads(run("--json", path).stdout)] == [
        "missing-lock-timeout",
        "create-index-without-concurrently",
        "missing-lock-timeout",
    ]
    result = run("--json", "--assume-lock-timeout", path)
    assert [f["rule"] for f in json.loads(result.stdout)] == ["create-index-without-concurrently"]
