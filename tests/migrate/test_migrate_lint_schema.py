"""`nonstop migrate lint --database-url`: the live catalog of a real PostgreSQL read into the
linter's schema, verdicts it proves safe left out, sizes named; bad URLs and unreachable
servers are clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from migrate_helpers import write

from nonstop.cli.migrate_lint import lint
from nonstop.migrate.catalog import read_schema
from nonstop.migrate.lint.types import ColumnType
from nonstop.migrate.tempdb import free_port

SETUP = """
CREATE TABLE orders (id bigint PRIMARY KEY, note varchar(100), amount numeric(10,2),
                     email text, status text NOT NULL);
INSERT INTO orders SELECT g, 'n', 1, 'e', 's' FROM generate_series(1, 2000) g;
ALTER TABLE orders ADD CONSTRAINT email_nn CHECK (email IS NOT NULL);
ALTER TABLE orders ADD CONSTRAINT note_nn CHECK (note IS NOT NULL) NOT VALID;
CREATE INDEX orders_note_idx ON orders (note);
ANALYZE orders;
CREATE TABLE fresh (n int, tag varchar(10)[]);
CREATE TABLE events (at date, v int) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events VALUES ('2026-03-01', 1);
"""

MIGRATION = """SET lock_timeout = '1s';
ALTER TABLE orders ALTER COLUMN note TYPE varchar(200);
ALTER TABLE orders ALTER COLUMN status SET NOT NULL;
ALTER TABLE orders ALTER COLUMN email SET NOT NULL;
ALTER TABLE fresh ADD CONSTRAINT n_pos CHECK (n > 0);
CREATE INDEX fresh_n ON fresh (n);
CREATE INDEX orders_amount ON orders (amount);
CREATE INDEX events_v ON events (v);
"""


@pytest.fixture
def shop(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SETUP)
    return database_url


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(lint, [str(a) for a in args], catch_exceptions=False)


def test_catalog_is_read_into_the_schema(shop: str) -> None:
    schema = read_schema(shop)
    assert schema.columns["public.orders"]["note"] == ColumnType("varchar", (100,))
    assert schema.columns["public.orders"]["amount"] == ColumnType("numeric", (10, 2))
    assert schema.columns["public.fresh"]["tag"] == ColumnType("varchar", (10,), True)
    assert ("public.orders", "status") in schema.not_null
    assert ("public.orders", "email") in schema.not_null_checks
    assert schema.pending_checks == {"public.orders.note_nn": ("public.orders", "note")}
    assert schema.indexes["public.orders_note_idx"] == "public.orders"
    orders = schema.tables["public.orders"]
    assert orders.rows == 2000
    assert orders.heap_bytes > 0
    assert orders.total_bytes > orders.heap_bytes
    assert schema.is_empty("public.fresh")
    assert not schema.is_empty("public.events")  # its rows live in a partition


def test_lint_against_the_live_database(tmp_path: Path, shop: str) -> None:
    path = write(tmp_path / "m", {"0001.sql": MIGRATION}) / "0001.sql"
    offline = run("--json", path)
    online = run("--json", "--database-url", shop, path)
    assert offline.exit_code == online.exit_code == 1
    offline_rules = [(f["rule"], f["line"]) for f in json.loads(offline.stdout)]
    assert offline_rules == [
        ("change-column-type", 2),
        ("set-not-null", 3),
        ("set-not-null", 4),
        ("check-without-not-valid", 5),
        ("create-index-without-concurrently", 6),
        ("create-index-without-concurrently", 7),
        ("create-index-without-concurrently", 8),
    ]
    found = json.loads(online.stdout)
    assert [(f["rule"], f["line"]) for f in found] == [
        ("create-index-without-concurrently", 7),
        ("create-index-without-concurrently", 8),
    ]
    assert "(public.orders: about 2,000 rows, " in found[0]["message"]
    # the partition was never analysed: no estimate, but pages, so not empty
    assert "(public.events: row count not estimated yet, " in found[1]["message"]


def test_config_database_and_offline(
    tmp_path: Path, shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, {"nonstop.toml": '[migrations]\ndatabase_url = "$SHOP_URL"\n'})
    path = write(tmp_path / "m", {"0001.sql": MIGRATION}) / "0001.sql"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SHOP_URL", raising=False)
    assert len(json.loads(run("--json", path).stdout)) == 7  # variable not set: offline
    monkeypatch.setenv("SHOP_URL", shop)
    assert len(json.loads(run("--json", path).stdout)) == 2
    assert len(json.loads(run("--json", "--offline", path).stdout)) == 7


def test_the_nonstop_program_reads_the_configured_database(
    tmp_path: Path,
    shop: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the program's entry point: a nonstop.toml here keeps the run on the full
    command (the plain JSON lint of cli/lint_fast.py reads no config), so its database is read;
    ``--offline`` takes the plain path and reads none."""
    from nonstop.cli.main import main

    write(tmp_path, {"nonstop.toml": '[migrations]\ndatabase_url = "$SHOP_URL"\n'})
    path = write(tmp_path / "m", {"0001.sql": MIGRATION}) / "0001.sql"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOP_URL", shop)
    for args, expected in ((["--json"], 2), (["--json", "--offline"], 7)):
        with pytest.raises(SystemExit) as exited:
            main(["migrate", "lint", *args, str(path)])
        assert exited.value.code == 1
        assert len(json.loads(capsys.readouterr().out)) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "error: database_url is not a valid PostgreSQL URL"),
        ("postgresql://localhost:{port}/x", "error: cannot connect to PostgreSQL at localhost:"),
        ("$NONSTOP_TEST_UNSET", "the environment variable NONSTOP_TEST_UNSET is not set"),
    ],
)
def test_bad_or_unreachable_database_exits_2(tmp_path: Path, url: str, message: str) -> None:
    os.environ.pop("NONSTOP_TEST_UNSET", None)
    path = write(tmp_path, {"0001.sql": MIGRATION}) / "0001.sql"
    result = run("--database-url", url.format(port=free_port()), path)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_offline_with_a_url_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, {"0001.sql": MIGRATION}) / "0001.sql"
    result = run("--offline", "--database-url", "postgresql://localhost/x", path)
    assert result.exit_code == 2
    assert "--offline and --database-url" in result.stderr
