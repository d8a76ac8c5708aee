"""Backfill files use the runner's batch bounds :lo/:hi; the linter reads them as the runner
binds them ($1/$2), so a documented backfill lints clean and positions stay exact."""

from __future__ import annotations

from nonstop.migrate.lint import lint_text

HEADER = "-- nonstop: phase=backfill table=orders key=id batch=100\n"


def test_batch_bounds_lint_clean() -> None:
    sql = HEADER + "UPDATE orders SET cents = total * 100\n WHERE id BETWEEN :lo AND :hi;\n"
    assert lint_text(sql, "0002_fill.sql") == []


def test_findings_keep_their_lines_and_columns_after_binding() -> None:
    sql = (
        HEADER
        + "UPDATE orders SET cents = total * 100 WHERE id BETWEEN :lo AND :hi;\n"
        + "ALTER TABLE orders DROP COLUMN total;\n"
    )
    findings = lint_text(sql, "0002_fill.sql")
    assert findings, "DDL in a backfill is a finding"
    assert {(f.line, f.column) for f in findings} == {(3, 1)}


def test_a_string_or_cast_that_looks_like_a_bound_is_left_alone() -> None:
    sql = (
        HEADER
        + "UPDATE orders SET note = ':lo', cents = total::bigint WHERE id BETWEEN :lo AND :hi;\n"
    )
    assert lint_text(sql, "0002_fill.sql") == []
