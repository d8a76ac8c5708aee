"""Inline ignore comments: a reason is required, the rule must exist, scope is one statement."""

from __future__ import annotations

from nonstop.migrate.lint import lint_text

LT = "SET lock_timeout = '1s';\n"
RENAME = "ALTER TABLE users RENAME COLUMN email TO mail;"


def rules(sql: str) -> list[tuple[str, int, int]]:
    return [(f.rule, f.line, f.column) for f in lint_text(sql, "m.sql", phase="expand")]


def test_trailing_ignore_with_reason() -> None:
    sql = LT + RENAME + ' -- nonstop-lint: ignore=rename-column reason="column unused since v41"'
    assert rules(sql) == []


def test_ignore_on_the_line_before() -> None:
    sql = LT + '-- nonstop-lint: ignore=rename-column reason="unused since v41"\n' + RENAME
    assert rules(sql) == []


def test_ignore_applies_to_one_statement_only() -> None:
    sql = LT + '-- nonstop-lint: ignore=rename-column reason="unused"\n' + RENAME + "\n" + RENAME
    assert rules(sql) == [("rename-column", 4, 1)]


def test_ignore_of_several_rules_in_a_block_comment() -> None:
    directive = "nonstop-lint: ignore=truncate,missing-lock-timeout reason='fixture table'"
    sql = f"/* {directive} */\nTRUNCATE t;"
    assert rules(sql) == []


def test_ignore_without_reason_is_a_finding_and_does_not_apply() -> None:
    sql = LT + RENAME + " -- nonstop-lint: ignore=rename-column"
    findings = lint_text(sql, "m.sql", phase="expand")
    assert [(f.rule, f.line, f.column) for f in findings] == [
        ("rename-column", 2, 1),
        ("ignore-without-reason", 2, 48),
    ]
    assert findings[1].message == "ignore of rename-column gives no reason, so it does not apply"
    assert findings[1].severity == "error"


def test_ignore_with_empty_reason() -> None:
    sql = LT + RENAME + ' -- nonstop-lint: ignore=rename-column reason=""'
    assert [r for r, _, _ in rules(sql)] == ["rename-column", "ignore-without-reason"]


def test_ignore_of_unknown_rule() -> None:
    sql = LT + RENAME + ' -- nonstop-lint: ignore=rename-colum reason="typo"'
    findings = lint_text(sql, "m.sql", phase="expand")
    assert [f.rule for f in findings] == ["rename-column", "invalid-ignore"]
    assert findings[1].message.startswith("ignore comment names 'rename-colum': known rules are ")


def test_unbalanced_quote() -> None:
    sql = LT + RENAME + ' -- nonstop-lint: ignore=rename-column reason="oops'
    assert [r for r, _, _ in rules(sql)] == ["rename-column", "invalid-ignore"]


def test_directive_inside_a_string_is_not_a_comment() -> None:
    sql = LT + "SELECT '-- nonstop-lint: ignore=rename-column reason=\"x\"';\n" + RENAME
    assert rules(sql) == [("rename-column", 3, 1)]


def test_trailing_ignore_picks_the_last_statement_on_its_line() -> None:
    sql = LT + 'TRUNCATE a; TRUNCATE b; -- nonstop-lint: ignore=truncate reason="scratch table"'
    assert rules(sql) == [("truncate", 2, 10)]


def test_ignore_inside_a_multiline_statement() -> None:
    directive = '-- nonstop-lint: ignore=rename-column reason="no readers"'
    sql = LT + f"ALTER TABLE users\n  {directive}\n  RENAME COLUMN a TO b;"
    assert rules(sql) == []
