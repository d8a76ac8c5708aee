"""`nonstop migrate ...`: output, --json and exit codes (0 ok, 1 refused or failed, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from migrate_helpers import write

from nonstop.cli.main import main
from nonstop.migrate.tempdb import free_port

USERS = "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);\n"
FILL = (
    "-- nonstop: phase=backfill table=users key=id batch=2\n"
    "UPDATE users SET email = lower(email) WHERE id BETWEEN :lo AND :hi;\n"
)
DROP = "-- nonstop: phase=contract\nALTER TABLE users DROP COLUMN email;\n"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["migrate", *args])
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_plan_start_status_complete_rollback_round_trip(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write(tmp_path / "m", {"0001_users.sql": USERS, "0002_fill.sql": FILL})
    where = ["--dir", str(folder), "--database-url", database_url]

    code, out, _ = run(capsys, "plan", *where, "--json")
    assert code == 0
    assert json.loads(out)["pending"] == {
        "expand": ["0001_users.sql"],
        "backfill": ["0002_fill.sql"],
        "contract": [],
    }
    code, out, _ = run(capsys, "start", *where, "--json")
    assert code == 0
    started = json.loads(out)
    assert [a["name"] for a in started["applied"]] == ["0001_users.sql"]
    assert [(b["name"], b["rows"]) for b in started["backfills"]] == [("0002_fill.sql", 0)]

    code, out, _ = run(capsys, "status", *where, "--json")
    assert code == 0
    assert [(e["name"], e["status"]) for e in json.loads(out)] == [
        ("0001_users.sql", "applied"),
        ("0002_fill.sql", "applied"),
    ]
    code, out, _ = run(capsys, "status", *where)
    assert code == 0
    assert "0002_fill.sql" in out

    write(folder, {"0003_drop.sql": DROP})
    state = ["--state-dir", str(tmp_path / "no-agent-yet")]
    code, out, _ = run(capsys, "complete", *where, *state, "--json")
    assert code == 0
    assert [a["name"] for a in json.loads(out)["applied"]] == ["0003_drop.sql"]

    code, _, err = run(capsys, "rollback", *where)
    assert code == 2
    assert "cannot roll back 0001_users.sql: it has no down SQL" in err


def test_bad_input_exit_codes_and_messages(
    tmp_path: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = write(tmp_path / "m", {"0001_users.sql": USERS})
    where = ["--dir", str(folder), "--database-url", database_url]

    code, _, err = run(
        capsys, "plan", "--dir", str(tmp_path / "missing"), "--database-url", database_url
    )
    assert (code, err.strip()) == (
        2,
        f"error: {tmp_path / 'missing'}: migrations directory not found "
        "(set [migrations] dir in nonstop.toml)",
    )

    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    code, _, err = run(capsys, "status", "--dir", str(folder), "--database-url", closed)
    assert code == 1
    assert err.startswith(
        f"error: cannot connect to PostgreSQL at 127.0.0.1:{closed.split(':')[2]}"
    )
    assert "Traceback" not in err

    monkeypatch.delenv("DATABASE_URL", raising=False)
    code, _, err = run(capsys, "plan", "--dir", str(folder))
    assert code == 2
    assert "no database URL: $DATABASE_URL is not set" in err

    write(folder, {"0002_bad.sql": "ALTER TABLE users\n  ADD COLUMN nick txt;\nSELEC 1;\n"})
    code, _, err = run(capsys, "start", *where)
    assert (code, err.strip()) == (2, 'error: 0002_bad.sql:3: syntax error at or near "SELEC"')

    write(folder, {"0002_bad.sql": "ALTER TABLE users\n  ADD COLUMN nick txt;\n"})
    code, _, err = run(capsys, "start", *where)
    assert code == 1
    assert 'error: 0002_bad.sql:2: type "txt" does not exist [42704]' in err

    (folder / "0002_bad.sql").unlink()
    code, _, _ = run(capsys, "start", *where)
    assert code == 0
    write(folder, {"0001_users.sql": USERS.replace("email", "mail")})
    code, _, err = run(capsys, "plan", *where)
    assert code == 1
    assert "0001_users.sql was changed after it was applied" in err

    write(folder, {"0001_users.sql": USERS, "0009_drop.sql": DROP, "0005_fill.sql": FILL})
    code, _, err = run(capsys, "complete", *where, "--state-dir", str(tmp_path / "state"))
    assert code == 1
    assert "contract refused: backfill 0005_fill.sql has not run yet" in err


def test_config_file_supplies_dir_and_url(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, {"db/0001_users.sql": USERS})
    (tmp_path / "nonstop.toml").write_text(
        '[app]\nname = "shop"\ncommand = "python3 app.py --port {port}"\n\n'
        f'[migrations]\ndir = "db"\ndatabase_url = "{database_url}"\nlock_timeout = "500ms"\n'
    )
    code, out, _ = run(capsys, "start", "--config", str(tmp_path / "nonstop.toml"), "--json")
    assert code == 0
    assert [a["name"] for a in json.loads(out)["applied"]] == ["0001_users.sql"]


def test_plan_summarises_lint_findings(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write(tmp_path / "m", {"0001_users.sql": USERS})
    where = ["--dir", str(folder), "--database-url", database_url]
    code, out, _ = run(capsys, "plan", *where, "--json")
    assert code == 0
    clean = json.loads(out)["lint"]

    # A plain CREATE INDEX blocks writes for the whole build: the linter reports it.
    write(folder, {"0002_index.sql": "CREATE INDEX users_email ON users (email);\n"})
    code, out, _ = run(capsys, "plan", *where, "--json")
    assert code == 0
    assert json.loads(out)["lint"]["errors"] > clean["errors"]
    code, out, _ = run(capsys, "plan", *where)
    assert code == 0
    assert "(details: nonstop migrate lint)" in out
    code, out, _ = run(capsys, "lint", str(folder / "0002_index.sql"))
    assert code != 0
    assert "0002_index.sql" in out
