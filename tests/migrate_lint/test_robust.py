"""Statements of every kind go through every rule without an exception (a user never sees a
traceback); the expected findings for the ones that matter are pinned in test_rules.py."""

from __future__ import annotations

import pytest

from nonstop.migrate.lint import lint_text

DIVERSE = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SCHEMA IF NOT EXISTS app;
CREATE TYPE mood AS ENUM ('sad', 'ok');
ALTER TYPE mood ADD VALUE 'happy';
ALTER TYPE address ADD ATTRIBUTE zip text;
ALTER TYPE address RENAME ATTRIBUTE zip TO postcode;
CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');
CREATE SEQUENCE s START 1;
ALTER SEQUENCE s RESTART WITH 10;
CREATE TABLE m (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE m_2020 PARTITION OF m FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
ALTER TABLE m ATTACH PARTITION m_2021 FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');
CREATE VIEW v AS SELECT 1 AS one;
CREATE OR REPLACE VIEW v AS SELECT 1 AS one, 2 AS two;
ALTER VIEW v RENAME COLUMN one TO uno;
ALTER VIEW v ALTER COLUMN uno SET DEFAULT 1;
CREATE MATERIALIZED VIEW mv AS SELECT 1;
REFRESH MATERIALIZED VIEW CONCURRENTLY mv;
CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER t BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION f();
CREATE POLICY p ON users USING (true);
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON users TO reader;
COMMENT ON COLUMN users.email IS 'login';
CLUSTER;
VACUUM;
ANALYZE users;
DO $$ BEGIN PERFORM 1; END $$;
CALL refresh_all();
COPY users (id) FROM STDIN;
INSERT INTO users (id) SELECT generate_series(1, 10) ON CONFLICT DO NOTHING;
WITH moved AS (DELETE FROM a WHERE x RETURNING *) INSERT INTO b SELECT * FROM moved;
MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v;
ALTER TABLE users ALTER COLUMN email SET STATISTICS 500;
ALTER TABLE users SET (fillfactor = 90);
ALTER TABLE users ALTER COLUMN email DROP NOT NULL;
ALTER TABLE users ALTER COLUMN email DROP DEFAULT;
ALTER TABLE users DROP CONSTRAINT IF EXISTS c;
ALTER TABLE users OWNER TO app;
ALTER INDEX i SET TABLESPACE fast;
ALTER TABLE users SET TABLESPACE fast;
DROP VIEW v;
DROP FUNCTION f();
DROP TYPE mood;
DROP SCHEMA app CASCADE;
DROP SEQUENCE s;
LISTEN ch;
NOTIFY ch;
EXPLAIN SELECT 1;
PREPARE q AS SELECT 1;
EXECUTE q;
DEALLOCATE q;
SAVEPOINT a;
RELEASE SAVEPOINT a;
SHOW lock_timeout;
"""


@pytest.mark.parametrize("phase", ["expand", "backfill", "contract"])
@pytest.mark.parametrize("pg", [9, 11, 12, 16])
def test_every_statement_kind_lints_without_error(phase: str, pg: int) -> None:
    from nonstop.migrate.lint import LintOptions

    findings = lint_text(DIVERSE, "m.sql", phase=phase, options=LintOptions(pg_version=pg))  # type: ignore[arg-type]
    assert all(f.line >= 2 for f in findings)
    assert {f.rule for f in findings} >= {"missing-lock-timeout"}


def test_alter_type_is_not_mistaken_for_a_table() -> None:
    sql = "SET lock_timeout = '1s';\nALTER TYPE address ALTER ATTRIBUTE zip TYPE varchar(5);\n"
    assert [f.rule for f in lint_text(sql, "m.sql", phase="expand")] == []
