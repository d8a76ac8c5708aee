"""Rules from a table of SQL cases: each row is a migration and the exact (rule, line, column)
findings it must produce; rows with no findings are the safe forms of the same changes."""

# ruff: noqa: E501  (tables of SQL cases: one case per row reads better than wrapped)
from __future__ import annotations

import pytest

from nonstop.migrate.lint import LintOptions, lint_text
from nonstop.migrate.phases import Phase

LT = "SET lock_timeout = '1s';\n"  # line 1 of most cases, so line 2 holds the statement

Expected = list[tuple[str, int, int]]

CASES: list[tuple[str, str, Phase, int, Expected]] = [
    # id, sql, phase, pg major version, expected findings
    ("rename-column", LT + "ALTER TABLE users RENAME COLUMN email TO mail;", "expand", 16,
     [("rename-column", 2, 1)]),
    ("rename-table", LT + "ALTER TABLE users RENAME TO accounts;", "expand", 16,
     [("rename-table", 2, 1)]),
    ("rename-in-new-table", LT + "CREATE TABLE t (a int);\nALTER TABLE t RENAME COLUMN a TO b;",
     "expand", 16, []),
    ("rename-index-is-fine", LT + "ALTER INDEX users_a_idx RENAME TO users_b_idx;", "expand", 16, []),
    ("drop-column-expand", LT + "ALTER TABLE users DROP COLUMN legacy;", "expand", 16,
     [("drop-column", 2, 1)]),
    ("drop-column-contract", LT + "ALTER TABLE users DROP COLUMN legacy;", "contract", 16, []),
    ("drop-column-backfill", LT + "ALTER TABLE users DROP COLUMN legacy;", "backfill", 16,
     [("backfill-ddl", 2, 1), ("drop-column", 2, 1)]),
    ("drop-table-expand", LT + "DROP TABLE old_orders;", "expand", 16, [("drop-table", 2, 1)]),
    ("drop-table-contract", LT + "DROP TABLE old_orders;", "contract", 16, []),
    ("drop-new-table", LT + "CREATE TABLE tmp (a int);\nDROP TABLE tmp;", "expand", 16, []),
    ("add-not-null-no-default", LT + "ALTER TABLE users ADD COLUMN age int NOT NULL;", "expand", 16,
     [("add-column-not-null", 2, 30)]),
    ("add-not-null-constant-default-pg11", LT + "ALTER TABLE users ADD COLUMN age int NOT NULL DEFAULT 0;",
     "expand", 11, []),
    ("add-default-pg10-rewrites", LT + "ALTER TABLE users ADD COLUMN age int NOT NULL DEFAULT 0;",
     "expand", 10, [("add-column-default", 2, 30)]),
    ("add-nullable", LT + "ALTER TABLE users ADD COLUMN nick text;", "expand", 16, []),
    ("default-now-is-stable", LT + "ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT now();",
     "expand", 16, []),
    ("default-current-timestamp", LT + "ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT CURRENT_TIMESTAMP;",
     "expand", 16, []),
    ("default-clock-timestamp", LT + "ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT clock_timestamp();",
     "expand", 16, [("volatile-default", 2, 30)]),
    ("default-random", LT + "ALTER TABLE users ADD COLUMN r float8 DEFAULT random();", "expand", 16,
     [("volatile-default", 2, 30)]),
    ("default-uuid", LT + "ALTER TABLE users ADD COLUMN u uuid DEFAULT gen_random_uuid();", "expand", 16,
     [("volatile-default", 2, 30)]),
    ("bigserial", LT + "ALTER TABLE users ADD COLUMN n bigserial;", "expand", 16,
     [("volatile-default", 2, 30)]),
    ("identity", LT + "ALTER TABLE users ADD COLUMN n int GENERATED ALWAYS AS IDENTITY;", "expand", 16,
     [("volatile-default", 2, 30)]),
    ("serial-in-create-table", LT + "CREATE TABLE t (id bigserial PRIMARY KEY);", "expand", 16, []),
    ("set-not-null", LT + "ALTER TABLE users ALTER COLUMN email SET NOT NULL;", "expand", 16,
     [("set-not-null", 2, 1)]),
    ("set-not-null-after-validated-check",
     LT + "ALTER TABLE users ADD CONSTRAINT c CHECK (email IS NOT NULL) NOT VALID;\n"
     "ALTER TABLE users VALIDATE CONSTRAINT c;\nALTER TABLE users ALTER COLUMN email SET NOT NULL;",
     "expand", 16, []),
    ("set-not-null-check-not-validated",
     LT + "ALTER TABLE users ADD CONSTRAINT c CHECK (email IS NOT NULL) NOT VALID;\n"
     "ALTER TABLE users ALTER COLUMN email SET NOT NULL;",
     "expand", 16, [("set-not-null", 3, 1)]),
    ("set-not-null-check-other-column",
     LT + "ALTER TABLE users ADD CONSTRAINT c CHECK (name IS NOT NULL) NOT VALID;\n"
     "ALTER TABLE users VALIDATE CONSTRAINT c;\nALTER TABLE users ALTER COLUMN email SET NOT NULL;",
     "expand", 16, [("set-not-null", 4, 1)]),
    ("set-not-null-pg11-check-does-not-help",
     LT + "ALTER TABLE users ADD CONSTRAINT c CHECK (email IS NOT NULL) NOT VALID;\n"
     "ALTER TABLE users VALIDATE CONSTRAINT c;\nALTER TABLE users ALTER COLUMN email SET NOT NULL;",
     "expand", 11, [("set-not-null", 4, 1)]),
    ("type-change-unknown-old", LT + "ALTER TABLE users ALTER COLUMN email TYPE varchar(500);", "expand", 16,
     [("change-column-type", 2, 32)]),
    ("create-index", LT + "CREATE INDEX users_email_idx ON users (email);", "expand", 16,
     [("create-index-without-concurrently", 2, 1)]),
    ("create-index-concurrently", LT + "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
     "expand", 16, []),
    ("create-index-new-table", LT + "CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a);", "expand", 16, []),
    ("drop-index", LT + "DROP INDEX users_email_idx;", "expand", 16,
     [("drop-index-without-concurrently", 2, 1)]),
    ("drop-index-concurrently", LT + "DROP INDEX CONCURRENTLY users_email_idx;", "contract", 16, []),
    ("concurrently-in-transaction",
     LT + "BEGIN;\nCREATE INDEX CONCURRENTLY i ON users (a);\nCOMMIT;", "expand", 16,
     [("concurrently-in-transaction", 3, 1)]),
    ("concurrently-after-commit",
     LT + "BEGIN;\nALTER TABLE users ADD COLUMN a int;\nCOMMIT;\nCREATE INDEX CONCURRENTLY i ON users (a);",
     "expand", 16, []),
    ("unique-constraint", LT + "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);",
     "expand", 16, [("unique-without-index", 2, 23)]),
    ("primary-key", LT + "ALTER TABLE users ADD PRIMARY KEY (id);", "expand", 16,
     [("unique-without-index", 2, 23)]),
    ("unique-using-index", LT + "ALTER TABLE users ADD CONSTRAINT k UNIQUE USING INDEX k;", "expand", 16, []),
    ("foreign-key", LT + "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);",
     "expand", 16, [("foreign-key-without-not-valid", 2, 24)]),
    ("foreign-key-not-valid",
     LT + "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n"
     "ALTER TABLE orders VALIDATE CONSTRAINT fk;", "expand", 16, []),
    ("check", LT + "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total > 0);", "expand", 16,
     [("check-without-not-valid", 2, 24)]),
    ("check-inline-on-add-column", LT + "ALTER TABLE orders ADD COLUMN n int CHECK (n > 0);", "expand", 16,
     [("check-without-not-valid", 2, 37)]),
    ("vacuum-full", LT + "VACUUM FULL users;", "expand", 16, [("vacuum-full", 2, 1)]),
    ("vacuum-plain", LT + "VACUUM users;", "expand", 16, []),
    ("cluster", LT + "CLUSTER users USING users_pkey;", "expand", 16, [("cluster", 2, 1)]),
    ("reindex", LT + "REINDEX INDEX users_pkey;", "expand", 16, [("reindex-without-concurrently", 2, 1)]),
    ("reindex-concurrently", LT + "REINDEX (CONCURRENTLY) INDEX users_pkey;", "expand", 16, []),
    ("truncate", LT + "TRUNCATE sessions;", "expand", 16, [("truncate", 2, 10)]),
    ("no-lock-timeout", "ALTER TABLE users ADD COLUMN a int;", "expand", 16, [("missing-lock-timeout", 1, 1)]),
    ("lock-timeout-zero", "SET lock_timeout = 0;\nALTER TABLE users ADD COLUMN a int;", "expand", 16,
     [("missing-lock-timeout", 2, 1)]),
    ("lock-timeout-reset", LT + "RESET lock_timeout;\nDROP INDEX CONCURRENTLY i;\nALTER TABLE users ADD a int;",
     "expand", 16, [("missing-lock-timeout", 4, 1)]),
    ("set-local-ends-at-commit",
     "BEGIN;\nSET LOCAL lock_timeout = '1s';\nALTER TABLE users ADD a int;\nCOMMIT;\nALTER TABLE users ADD b int;",
     "expand", 16, [("missing-lock-timeout", 5, 1)]),
    ("no-lock-on-new-table", "CREATE TABLE t (id int);\nALTER TABLE t ADD COLUMN a int;", "expand", 16, []),
    ("references-locks-existing", "CREATE TABLE t (id int REFERENCES users (id));", "expand", 16,
     [("missing-lock-timeout", 1, 1)]),
    ("backfill-batched", "UPDATE users SET email = lower(email) WHERE id BETWEEN 1 AND 5000;", "backfill",
     16, []),
    ("backfill-unbatched", "UPDATE users SET email = lower(email);", "backfill", 16,
     [("unbatched-backfill", 1, 1)]),
    ("backfill-delete-all", "DELETE FROM sessions;", "backfill", 16, [("unbatched-backfill", 1, 1)]),
    ("backfill-ddl", LT + "CREATE INDEX CONCURRENTLY i ON users (a);", "backfill", 16, [("backfill-ddl", 2, 1)]),
    ("backfill-analyze", "ANALYZE users;", "backfill", 16, []),
    ("update-in-expand", LT + "UPDATE users SET a = 1 WHERE id = 1;", "expand", 16,
     [("dml-outside-backfill", 2, 1)]),
    ("utf8-columns-count-characters", LT + "SELECT 'ééé'; ALTER TABLE users RENAME COLUMN a TO b;",
     "expand", 16, [("rename-column", 2, 15)]),
    ("utf8-line-after-multibyte", "-- migración de usuarios ✓\n" + LT + "  TRUNCATE sesiones;", "expand", 16,
     [("truncate", 3, 12)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sql", "phase", "pg", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_cases(sql: str, phase: Phase, pg: int, expected: Expected) -> None:
    findings = lint_text(sql, "m.sql", phase=phase, options=LintOptions(pg_version=pg))
    assert sorted((f.rule, f.line, f.column) for f in findings) == sorted(expected)


def test_every_finding_says_what_breaks_and_the_safe_alternative() -> None:
    sql = "\n".join(case[1] for case in CASES if case[2] == "expand")
    findings = lint_text(sql, "m.sql", phase="expand")
    assert {f.rule for f in findings} >= {"rename-column", "set-not-null", "truncate"}
    for finding in findings:
        assert finding.message, finding
        assert finding.fix, finding
        assert finding.severity in ("error", "warning")


def test_pinned_messages() -> None:
    findings = lint_text(
        LT + "ALTER TABLE users RENAME COLUMN email TO mail;", "m.sql", phase="expand"
    )
    assert [f.message for f in findings] == [
        "renaming column email of users to mail takes an ACCESS EXCLUSIVE lock, and every query "
        "of the running release that uses email fails at once (column does not exist)"
    ]
    assert findings[0].fix == (
        "expand: add the new column mail; backfill: copy the data in batches and keep both in sync "
        "(trigger or dual writes); release code that uses the new column mail; contract: drop the "
        "old one once no running release uses it"
    )
    (finding,) = lint_text(
        LT + "ALTER TABLE app.users ALTER email SET NOT NULL;", "m.sql", phase="expand"
    )
    assert finding.message == (
        "SET NOT NULL on app.users.email scans the whole table under an ACCESS EXCLUSIVE lock to "
        "look for NULLs: reads and writes block until the scan ends"
    )
    (finding,) = lint_text(LT + "ALTER TABLE users ALTER email SET NOT NULL;", "m.sql", phase="expand",
                           options=LintOptions(pg_version=11))  # fmt: skip
    assert finding.message.startswith("on PostgreSQL 11, SET NOT NULL on users.email scans")


def test_unknown_function_default_is_a_warning() -> None:
    (finding,) = lint_text(
        LT + "ALTER TABLE t ADD COLUMN c int DEFAULT next_code();", "m.sql", phase="expand"
    )
    assert (finding.rule, finding.severity) == ("volatile-default", "warning")
    assert "next_code()" in finding.message


MORE_CASES: list[tuple[str, str, Expected]] = [
    ("drop-index-concurrently-in-transaction", LT + "BEGIN;\nDROP INDEX CONCURRENTLY i;\nCOMMIT;",
     [("concurrently-in-transaction", 3, 1)]),
    ("reindex-concurrently-in-transaction", LT + "START TRANSACTION;\nREINDEX (CONCURRENTLY) TABLE t;\nEND;",
     [("concurrently-in-transaction", 3, 1)]),
    ("detach-concurrently-in-transaction", LT + "BEGIN;\nALTER TABLE m DETACH PARTITION m_2020 CONCURRENTLY;\nCOMMIT;",
     [("concurrently-in-transaction", 3, 1)]),
    ("schema-qualified-new-table", "CREATE TABLE app.t (id int);\nALTER TABLE app.t ADD COLUMN a int NOT NULL;", []),
    ("public-is-the-default-schema", "CREATE TABLE public.t (id int);\nCREATE INDEX i ON t (id);", []),
    ("other-schema-is-another-table", LT + "CREATE TABLE app.t (id int);\nCREATE INDEX i ON t (id);",
     [("create-index-without-concurrently", 3, 1)]),
    ("drop-index-created-here-still-locks-its-table", "CREATE INDEX CONCURRENTLY i ON t (a);\nDROP INDEX i;",
     [("missing-lock-timeout", 2, 1), ("drop-index-without-concurrently", 2, 1)]),
    ("drop-index-on-new-table", "CREATE TABLE t (a int);\nCREATE INDEX i ON t (a);\nDROP INDEX i;", []),
    ("validate-only-needs-no-timeout", "ALTER TABLE t VALIDATE CONSTRAINT c;", []),
    ("table-level-foreign-key-in-create",
     "CREATE TABLE t (id int, u int, FOREIGN KEY (u) REFERENCES users (id));", [("missing-lock-timeout", 1, 1)]),
    ("lock-table", "LOCK TABLE users IN ACCESS EXCLUSIVE MODE;", [("missing-lock-timeout", 1, 1)]),
    ("create-trigger", "CREATE TRIGGER t BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION f();",
     [("missing-lock-timeout", 1, 1)]),
    ("several-hazards-one-statement",
     LT + "ALTER TABLE users ADD COLUMN n int NOT NULL, ALTER COLUMN email SET NOT NULL, DROP COLUMN old;",
     [("add-column-not-null", 2, 30), ("set-not-null", 2, 1), ("drop-column", 2, 1)]),
    ("drop-several-tables-one-new", LT + "CREATE TABLE tmp (a int);\nDROP TABLE tmp, old;",
     [("drop-table", 3, 1)]),
    ("last-statement-without-semicolon", LT + "TRUNCATE sessions", [("truncate", 2, 10)]),
    ("set-config-lock-timeout", "SELECT set_config('lock_timeout', '2s', false);\nALTER TABLE users ADD a int;", []),
    ("set-config-local-ends-at-commit",
     "BEGIN;\nSELECT set_config('lock_timeout', '2s', true);\nALTER TABLE users ADD a int;\nCOMMIT;\n"
     "ALTER TABLE users ADD b int;", [("missing-lock-timeout", 5, 1)]),
    ("set-config-zero", "SELECT set_config('lock_timeout', '0', false);\nALTER TABLE users ADD a int;",
     [("missing-lock-timeout", 2, 1)]),
    ("set-tablespace", LT + "ALTER TABLE users SET TABLESPACE fast;", [("table-rewrite", 2, 1)]),
    ("set-logged", LT + "ALTER TABLE users SET LOGGED;", [("table-rewrite", 2, 1)]),
    ("set-unlogged-new-table", "CREATE TABLE t (a int);\nALTER TABLE t SET UNLOGGED;", []),
    ("refresh-matview", LT + "REFRESH MATERIALIZED VIEW daily_totals;",
     [("refresh-matview-without-concurrently", 2, 1)]),
    ("refresh-matview-concurrently", LT + "REFRESH MATERIALIZED VIEW CONCURRENTLY daily_totals;", []),
    ("refresh-matview-needs-lock-timeout", "REFRESH MATERIALIZED VIEW daily_totals;",
     [("refresh-matview-without-concurrently", 1, 1), ("missing-lock-timeout", 1, 1)]),
    ("exclusion-constraint", LT + "ALTER TABLE rooms ADD CONSTRAINT no_overlap EXCLUDE USING gist (span WITH &&);",
     [("unique-without-index", 2, 23)]),
    ("empty-file", "", []),
    ("comments-only", "-- nothing yet\n/* later */\n", []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sql", "expected"), [c[1:] for c in MORE_CASES], ids=[c[0] for c in MORE_CASES]
)
def test_more_rule_cases(sql: str, expected: Expected) -> None:
    findings = lint_text(sql, "m.sql", phase="expand")
    assert sorted((f.rule, f.line, f.column) for f in findings) == sorted(expected)
