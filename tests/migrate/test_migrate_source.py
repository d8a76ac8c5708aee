"""Migration files: statements and their lines, transactions, down SQL, backfill headers, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.migrate.errors import MigrationSourceError
from nonstop.migrate.source import (
    DEFAULT_BATCH,
    DEFAULT_BATCH_TIMEOUT,
    BackfillSpec,
    checksum,
    discover,
    parse_migration,
)

# (case, phase, text, [(line, transactional, sql)] of the up statements)
STATEMENTS = [
    (
        "two statements, comment lines before the second",
        "expand",
        "CREATE TABLE a (id int);\n\n-- the index\nCREATE INDEX a_id ON a (id);\n",
        [
            (1, True, "CREATE TABLE a (id int)"),
            (4, True, "CREATE INDEX a_id ON a (id)"),
        ],
    ),
    (
        "semicolon inside a string and a dollar-quoted body are not statement ends",
        "expand",
        "INSERT INTO a VALUES (';');\n"
        "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;",
        [
            (1, True, "INSERT INTO a VALUES (';')"),
            (2, True, "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql"),
        ],
    ),
    (
        "CREATE INDEX CONCURRENTLY cannot run in a transaction",
        "expand",
        "CREATE INDEX CONCURRENTLY a_id ON a (id);",
        [(1, False, "CREATE INDEX CONCURRENTLY a_id ON a (id)")],
    ),
    (
        "DROP INDEX CONCURRENTLY and REINDEX CONCURRENTLY neither",
        "contract",
        "DROP INDEX CONCURRENTLY a_id;\nREINDEX (CONCURRENTLY) INDEX b_id;\nDROP INDEX c_id;",
        [
            (1, False, "DROP INDEX CONCURRENTLY a_id"),
            (2, False, "REINDEX (CONCURRENTLY) INDEX b_id"),
            (3, True, "DROP INDEX c_id"),
        ],
    ),
    (
        "VACUUM neither",
        "expand",
        "VACUUM ANALYZE a;",
        [(1, False, "VACUUM ANALYZE a")],
    ),
]


@pytest.mark.parametrize(
    ("case", "phase", "text", "expected"), STATEMENTS, ids=[c[0] for c in STATEMENTS]
)
def test_statements_lines_and_transactions(
    case: str, phase: str, text: str, expected: list[tuple[int, bool, str]]
) -> None:
    migration = parse_migration("m.sql", text, phase=phase)
    assert [(s.line, s.transactional, s.sql) for s in migration.statements] == expected
    assert migration.transactional == all(t for _, t, _ in expected)
    assert migration.checksum == checksum(text)


def test_down_section_after_marker_keeps_its_line_numbers() -> None:
    text = (
        "ALTER TABLE users ADD COLUMN email_lower text;\n"
        "CREATE INDEX CONCURRENTLY users_el ON users (email_lower);\n"
        "--   nonstop:   down\n"
        "DROP INDEX CONCURRENTLY IF EXISTS users_el;\n"
        "ALTER TABLE users DROP COLUMN email_lower;\n"
    )
    migration = parse_migration("0002.sql", text, phase="expand")
    assert [s.line for s in migration.statements] == [1, 2]
    assert [(s.line, s.transactional) for s in migration.down] == [(4, False), (5, True)]
    assert migration.down[1].sql == "ALTER TABLE users DROP COLUMN email_lower"


BACKFILLS = [
    (
        "defaults",
        "-- nonstop: phase=backfill table=users key=id\n"
        "UPDATE users SET b = lower(a) WHERE id BETWEEN :lo AND :hi;",
        BackfillSpec("users", "id", DEFAULT_BATCH, 0.0, DEFAULT_BATCH_TIMEOUT),
        "UPDATE users SET b = lower(a) WHERE id BETWEEN $1  AND $2",
    ),
    (
        "every option, a schema-qualified table, ':lo' in a string and a cast left alone",
        "-- nonstop: phase=backfill table=app.users key=uid batch=200 pause=50ms timeout=2s\n"
        "-- fills b\n"
        "UPDATE app.users SET b = ':lo'::text WHERE uid >= :lo AND uid <= :HI;",
        BackfillSpec("app.users", "uid", 200, 0.05, 2.0),
        "UPDATE app.users SET b = ':lo'::text WHERE uid >= $1  AND uid <= $2",
    ),
    (
        "PostgreSQL's own $1/$2, which every SQL tool parses",
        "-- nonstop: phase=backfill table=users key=id\n"
        "UPDATE users SET b = lower(a) WHERE id BETWEEN $1 AND $2;",
        BackfillSpec("users", "id", DEFAULT_BATCH, 0.0, DEFAULT_BATCH_TIMEOUT),
        "UPDATE users SET b = lower(a) WHERE id BETWEEN $1 AND $2",
    ),
]


@pytest.mark.parametrize(("case", "text", "spec", "sql"), BACKFILLS, ids=[c[0] for c in BACKFILLS])
def test_backfill_header_and_placeholders(
    case: str, text: str, spec: BackfillSpec, sql: str
) -> None:
    migration = parse_migration("b.sql", text, phase="backfill")
    assert migration.backfill == spec
    assert [s.sql for s in migration.statements] == [sql]


# (case, phase, text, expected message "file:line: ...")
ERRORS = [
    (
        "syntax error names the line",
        "expand",
        "CREATE TABLE a (id int);\n\nCREATE TABEL b (id int);\n",
        'm.sql:3: syntax error at or near "TABEL"',
    ),
    (
        "empty file",
        "expand",
        "-- nothing yet\n",
        "m.sql: no SQL statement found",
    ),
    (
        "BEGIN/COMMIT is the runner's job",
        "expand",
        "BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n",
        "m.sql:1: remove BEGIN/COMMIT: nonstop runs each migration in a transaction by itself",
    ),
    (
        "backfill without table and key",
        "backfill",
        "-- nonstop: phase=backfill\nUPDATE a SET b = 1 WHERE id BETWEEN :lo AND :hi;",
        "m.sql:1: backfill header needs table and key, e.g. "
        "-- nonstop: phase=backfill table=users key=id batch=1000",
    ),
    (
        "backfill without :hi",
        "backfill",
        "-- nonstop: phase=backfill table=a key=id\nUPDATE a SET b = 1 WHERE id >= :lo;",
        "m.sql: a backfill UPDATE must use the batch bounds :hi, e.g. WHERE id BETWEEN :lo AND :hi",
    ),
    (
        "backfill with a bad batch",
        "backfill",
        "-- nonstop: phase=backfill table=a key=id batch=lots\n"
        "UPDATE a SET b = 1 WHERE id BETWEEN :lo AND :hi;",
        "m.sql:1: batch: expected a positive integer, got 'lots'",
    ),
    (
        "backfill that is not an UPDATE",
        "backfill",
        "-- nonstop: phase=backfill table=a key=id\nDELETE FROM a WHERE id BETWEEN :lo AND :hi;",
        "m.sql:2: a backfill holds one UPDATE, found DeleteStmt",
    ),
    (
        "backfill with two statements",
        "backfill",
        "-- nonstop: phase=backfill table=a key=id\n"
        "UPDATE a SET b = 1 WHERE id BETWEEN :lo AND :hi;\nUPDATE a SET c = 1 WHERE id = 1;",
        "m.sql:3: a backfill holds exactly one UPDATE, found 2 statements",
    ),
    (
        "down SQL in a contract",
        "contract",
        "DROP TABLE a;\n-- nonstop: down\nCREATE TABLE a (id int);",
        "m.sql:2: down SQL is only supported for expand migrations, this one is contract",
    ),
    (
        "syntax error in the down section names its line",
        "expand",
        "CREATE TABLE a (id int);\n-- nonstop: down\nDROP TABEL a;",
        'm.sql:3: syntax error at or near "TABEL"',
    ),
    (
        "backfill with a third parameter",
        "backfill",
        "-- nonstop: phase=backfill table=a key=id\n"
        "UPDATE a SET b = $3\n WHERE id BETWEEN $1 AND $2;",
        "m.sql:2: a backfill knows only $1 (= :lo) and $2 (= :hi), found $3",
    ),
]


@pytest.mark.parametrize(("case", "phase", "text", "message"), ERRORS, ids=[c[0] for c in ERRORS])
def test_bad_files_name_file_and_line(case: str, phase: str, text: str, message: str) -> None:
    with pytest.raises(MigrationSourceError) as raised:
        parse_migration("m.sql", text, phase=phase)
    assert str(raised.value) == message
    assert raised.value.exit_code == 2


def test_discover_orders_by_file_name_and_takes_phase_from_directory(tmp_path: Path) -> None:
    (tmp_path / "contract").mkdir()
    (tmp_path / "backfill").mkdir()
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "contract" / "0003_c.sql").write_text("DROP TABLE old;")
    (tmp_path / "backfill" / "0002_b.sql").write_text(
        "-- nonstop: table=a key=id\nUPDATE a SET b = 1 WHERE id BETWEEN :lo AND :hi;"
    )
    (tmp_path / "0004_d.sql").write_text("-- nonstop: phase=contract\nDROP TABLE older;")
    found = [(m.name, m.phase) for m in discover(tmp_path)]
    assert found == [
        ("0001_a.sql", "expand"),
        ("backfill/0002_b.sql", "backfill"),
        ("contract/0003_c.sql", "contract"),
        ("0004_d.sql", "contract"),
    ]


def test_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationSourceError, match="migrations directory not found"):
        discover(tmp_path / "nope")
