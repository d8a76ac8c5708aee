"""``--fix``: the mechanical safe sequences, and that the fixed SQL parses and lints clean."""

# ruff: noqa: E501  (tables of SQL cases: one case per row reads better than wrapped)
from __future__ import annotations

import pytest
from pglast import parse_sql
from pglast import parser as pg

from nonstop.migrate.lint import LintOptions, apply_fixes, fixes, lint_text

LT = "SET lock_timeout = '1s';\n"

FIX_CASES = [
    (
        "set-not-null",
        LT + "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n",
        LT + "ALTER TABLE users ADD CONSTRAINT users_email_not_null CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE users VALIDATE CONSTRAINT users_email_not_null;\n"
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n"
        "ALTER TABLE users DROP CONSTRAINT users_email_not_null;\n",
    ),
    (
        "create-index",
        LT + "CREATE INDEX users_email_idx ON users (lower(email)) WHERE deleted_at IS NULL;\n",
        LT + "CREATE INDEX CONCURRENTLY users_email_idx ON users (lower(email)) WHERE deleted_at IS NULL;\n",
    ),
    (
        "create-index-inside-transaction",
        LT + "BEGIN;\nALTER TABLE users ADD COLUMN a int;\nCREATE INDEX i ON users (a);\nCOMMIT;\n",
        LT + "BEGIN;\nALTER TABLE users ADD COLUMN a int;\nCOMMIT;\nCREATE INDEX CONCURRENTLY i ON users (a);\n"
        "BEGIN;\nCOMMIT;\n",
    ),
    (
        "concurrently-inside-transaction",
        LT + "BEGIN;\nCREATE INDEX CONCURRENTLY i ON users (a);\nCOMMIT;\n",
        LT + "BEGIN;\nCOMMIT;\nCREATE INDEX CONCURRENTLY i ON users (a);\nBEGIN;\nCOMMIT;\n",
    ),
    (
        "drop-index",
        LT + "DROP INDEX IF EXISTS app.users_email_idx;\n",
        LT + "DROP INDEX CONCURRENTLY IF EXISTS app.users_email_idx;\n",
    ),
    (
        "foreign-key",
        LT + "ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id);\n",
        LT + "ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_id_fkey;\n",
    ),
    (
        "check",
        LT + 'ALTER TABLE "Orders" ADD CONSTRAINT positive CHECK (total > 0);\n',
        LT + 'ALTER TABLE "Orders" ADD CONSTRAINT positive CHECK (total > 0) NOT VALID;\n'
        'ALTER TABLE "Orders" VALIDATE CONSTRAINT positive;\n',
    ),
    (
        "unique",
        LT + "ALTER TABLE users ADD UNIQUE (email, org_id);\n",
        LT + "CREATE UNIQUE INDEX CONCURRENTLY users_email_org_id_key ON users (email, org_id);\n"
        "ALTER TABLE users ADD CONSTRAINT users_email_org_id_key UNIQUE USING INDEX users_email_org_id_key;\n",
    ),
    (
        "keeps-formatting-and-comments",
        LT + "CREATE UNIQUE INDEX -- the hot lookup\n    IF NOT EXISTS orders_ref_idx\n    ON orders (ref);\n",
        LT + "CREATE UNIQUE INDEX CONCURRENTLY -- the hot lookup\n    IF NOT EXISTS orders_ref_idx\n    ON orders (ref);\n",
    ),
    (
        "foreign-key-with-actions-and-utf8-names",
        LT + "ALTER TABLE pedidos_año ADD FOREIGN KEY (cliente_id) REFERENCES clientes (id) ON DELETE CASCADE;\n",
        LT + 'ALTER TABLE pedidos_año ADD CONSTRAINT "pedidos_año_cliente_id_fkey" FOREIGN KEY (cliente_id) REFERENCES clientes (id) ON DELETE CASCADE NOT VALID;\n'
        'ALTER TABLE "pedidos_año" VALIDATE CONSTRAINT "pedidos_año_cliente_id_fkey";\n',
    ),
    (
        "reindex-with-options",
        LT + "REINDEX (VERBOSE) INDEX users_pkey;\n",
        LT + "REINDEX (CONCURRENTLY, VERBOSE) INDEX users_pkey;\n",
    ),
    (
        "unnamed-check-named-after-its-first-column",
        LT + "ALTER TABLE orders ADD CHECK (total >= discount);\n",
        LT + "ALTER TABLE orders ADD CONSTRAINT orders_total_check CHECK (total >= discount) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_check;\n",
    ),
    (
        "refresh-matview",
        LT + "REFRESH MATERIALIZED VIEW app.daily_totals WITH DATA;\n",
        LT + "REFRESH MATERIALIZED VIEW CONCURRENTLY app.daily_totals WITH DATA;\n",
    ),
    (
        "reindex",
        LT + "REINDEX TABLE users;\n",
        LT + "REINDEX (CONCURRENTLY) TABLE users;\n",
    ),
    (
        "lock-timeout-once-before-the-first",
        "-- nonstop: phase=expand\nCREATE TABLE t (id int);\nALTER TABLE users ADD a int;\nALTER TABLE users ADD b int;\n",
        "-- nonstop: phase=expand\nCREATE TABLE t (id int);\nSET lock_timeout = '2s';\nALTER TABLE users ADD a int;\n"
        "ALTER TABLE users ADD b int;\n",
    ),
    (
        "lock-timeout-and-replacement-on-one-statement",
        "CREATE INDEX i ON users (a); -- keep me\n",
        "SET lock_timeout = '2s';\nCREATE INDEX CONCURRENTLY i ON users (a); -- keep me\n",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sql", "fixed"), [c[1:] for c in FIX_CASES], ids=[c[0] for c in FIX_CASES]
)
def test_fix_writes_the_safe_sequence(sql: str, fixed: str) -> None:
    findings = lint_text(sql, "m.sql", phase="expand")
    assert findings, "the case must start with a hazard"
    result = apply_fixes(sql, findings)
    assert result == fixed
    parse_sql(result)  # still parses
    assert lint_text(result, "m.sql", phase="expand") == []  # and lints clean


def test_fix_leaves_what_it_cannot_rewrite() -> None:
    sql = (
        LT
        + "ALTER TABLE users RENAME COLUMN a TO b;\nALTER TABLE users ALTER a SET NOT NULL, ADD c int;\n"
    )
    findings = lint_text(sql, "m.sql", phase="expand")
    assert [f.rule for f in findings] == ["rename-column", "set-not-null"]
    assert all(f.replacement is None for f in findings)
    assert apply_fixes(sql, findings) == sql


def test_no_mechanical_set_not_null_before_pg12() -> None:
    sql = LT + "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n"
    (finding,) = lint_text(sql, "m.sql", phase="expand", options=LintOptions(pg_version=11))
    assert finding.replacement is None


def test_fix_on_a_last_statement_without_semicolon() -> None:
    sql = "SET lock_timeout = '1s';\nALTER TABLE users ALTER email SET NOT NULL\n\n"
    fixed = apply_fixes(sql, lint_text(sql, "m.sql", phase="expand"))
    assert fixed.endswith("ALTER TABLE users DROP CONSTRAINT users_email_not_null\n\n")
    assert lint_text(fixed, "m.sql", phase="expand") == []


def _scanned(sql: str, token_name: str, text: str) -> str | None:
    """What insert_after writes, from the scanner's tokens alone (None: no such token)."""
    for token in pg.scan(sql):
        if token.name == token_name:
            return sql[: token.end + 1] + text + sql[token.end + 1 :]
    return None


@pytest.mark.parametrize(
    ("sql", "keyword"),
    [
        ("CREATE INDEX i ON t (a)", "INDEX"),
        ("create unique index i on t (a)", "INDEX"),
        ("  CREATE\n\tUNIQUE  INDEX\r\nIF NOT EXISTS i ON t (a)", "INDEX"),
        ("CREATE INDEX index ON t (index)", "INDEX"),
        ("DROP INDEX app.idx_1", "INDEX"),
        ("REFRESH MATERIALIZED VIEW app.v", "VIEW"),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY v", "VIEW"),
        ("REINDEX TABLE t", "REINDEX"),
        # not plain words before the keyword: the scanner decides
        ("/* INDEX */ CREATE INDEX i ON t (a)", "INDEX"),
        ("-- INDEX\nCREATE INDEX i ON t (a)", "INDEX"),
        ('CREATE "INDEX" INDEX i ON t (a)', "INDEX"),
        ("CREATE INDEXé INDEX i ON t (a)", "INDEX"),
        ("CREATE INDEX$ INDEX i ON t (a)", "INDEX"),
        ("CREATE INDEX_ INDEX i ON t (a)", "INDEX"),
        ("CREATE\vINDEX i ON t (a)", "INDEX"),
        ("REFRESH MATERIALIZED VIEWS VIEW v", "VIEW"),
        ("CREATE INDEX(a) ON t", "INDEX"),
    ],
)
def test_keyword_found_without_the_scanner_is_the_scanners(sql: str, keyword: str) -> None:
    expected = _scanned(sql, keyword, " CONCURRENTLY")
    if expected is None:
        with pytest.raises(ValueError, match="no"):
            fixes.insert_after(sql, keyword, " CONCURRENTLY")
    else:
        assert fixes.insert_after(sql, keyword, " CONCURRENTLY") == expected
