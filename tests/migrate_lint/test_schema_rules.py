"""Rules given the live schema: a table of cases, each a migration, the schema it runs against
and the exact findings (rule, line) it must give. Offline (no schema) every hazard is reported;
the schema proves some changes safe and names the table's size in every other message."""

# ruff: noqa: E501  (tables of SQL cases: one case per row reads better than wrapped)
from __future__ import annotations

import pytest

from nonstop.migrate.catalog import build_schema, column_type_of
from nonstop.migrate.lint import LintOptions, lint_text
from nonstop.migrate.lint.schema import Schema, TableStats, format_bytes
from nonstop.migrate.lint.types import ColumnType, named_type

LT = "SET lock_timeout = '1s';\n"
BIG = TableStats(rows=1_204_311, heap_bytes=100_663_296, total_bytes=327_155_712)
EMPTY = TableStats(rows=0, heap_bytes=0, total_bytes=16_384)

SCHEMA = Schema(
    columns={
        "public.orders": {
            "id": named_type("int8"),
            "note": named_type("varchar", (100,)),
            "amount": named_type("numeric", (10, 2)),
            "code": named_type("int4"),
            "email": named_type("text"),
            "status": named_type("text"),
        },
        "public.fresh": {"note": named_type("varchar", (10,)), "n": named_type("int4")},
    },
    not_null=frozenset({("public.orders", "id"), ("public.orders", "status")}),
    not_null_checks=frozenset({("public.orders", "email")}),
    pending_checks={"public.orders.code_nn": ("public.orders", "code")},
    indexes={"public.orders_note_idx": "public.orders"},
    tables={"public.orders": BIG, "public.fresh": EMPTY},
    where="localhost:5432/app",
)

Expected = list[tuple[str, int]]

CASES: list[tuple[str, str, Expected, Expected]] = [
    # id, sql, offline findings, findings with the schema
    (
        "varchar-longer",
        LT + "ALTER TABLE orders ALTER COLUMN note TYPE varchar(200);",
        [("change-column-type", 2)],
        [],
    ),
    (
        "varchar-to-text",
        LT + "ALTER TABLE orders ALTER COLUMN note TYPE text;",
        [("change-column-type", 2)],
        [],
    ),
    (
        "varchar-shorter-rewrites",
        LT + "ALTER TABLE orders ALTER COLUMN note TYPE varchar(50);",
        [("change-column-type", 2)],
        [("change-column-type", 2)],
    ),
    (
        "numeric-more-precision",
        LT + "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14,2);",
        [("change-column-type", 2)],
        [],
    ),
    (
        "numeric-other-scale",
        LT + "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14,3);",
        [("change-column-type", 2)],
        [("change-column-type", 2)],
    ),
    (
        "int-to-bigint-rewrites",
        LT + "ALTER TABLE orders ALTER COLUMN code TYPE bigint;",
        [("change-column-type", 2)],
        [("change-column-type", 2)],
    ),
    ("drop-not-null", LT + "ALTER TABLE orders ALTER COLUMN status DROP NOT NULL;", [], []),
    (
        "set-not-null-already",
        LT + "ALTER TABLE orders ALTER COLUMN status SET NOT NULL;",
        [("set-not-null", 2)],
        [],
    ),
    (
        "set-not-null-validated-check",
        LT + "ALTER TABLE orders ALTER COLUMN email SET NOT NULL;",
        [("set-not-null", 2)],
        [],
    ),
    (
        "set-not-null-after-validating-live-check",
        LT
        + "ALTER TABLE orders VALIDATE CONSTRAINT code_nn;\nALTER TABLE orders ALTER COLUMN code SET NOT NULL;",
        [("set-not-null", 3)],
        [],
    ),
    (
        "set-not-null-scans",
        LT + "ALTER TABLE orders ALTER COLUMN note SET NOT NULL;",
        [("set-not-null", 2)],
        [("set-not-null", 2)],
    ),
    (
        "check-not-valid-on-empty",
        LT + "ALTER TABLE fresh ADD CONSTRAINT n_pos CHECK (n > 0) NOT VALID;",
        [],
        [],
    ),
    (
        "check-on-empty",
        LT + "ALTER TABLE fresh ADD CONSTRAINT n_pos CHECK (n > 0);",
        [("check-without-not-valid", 2)],
        [],
    ),
    (
        "check-on-big",
        LT + "ALTER TABLE orders ADD CONSTRAINT c_pos CHECK (code > 0);",
        [("check-without-not-valid", 2)],
        [("check-without-not-valid", 2)],
    ),
    (
        "index-on-empty",
        LT + "CREATE INDEX fresh_n ON fresh (n);",
        [("create-index-without-concurrently", 2)],
        [],
    ),
    (
        "index-on-big",
        LT + "CREATE INDEX orders_code ON orders (code);",
        [("create-index-without-concurrently", 2)],
        [("create-index-without-concurrently", 2)],
    ),
    (
        "type-change-on-empty",
        LT + "ALTER TABLE fresh ALTER COLUMN n TYPE bigint;",
        [("change-column-type", 2)],
        [],
    ),
    (
        "rename-on-empty-still-breaks",
        LT + "ALTER TABLE fresh RENAME COLUMN n TO m;",
        [("rename-column", 2)],
        [("rename-column", 2)],
    ),
    (
        "lock-timeout-on-empty-still-needed",
        "ALTER TABLE fresh ALTER COLUMN n DROP NOT NULL;",
        [("missing-lock-timeout", 1)],
        [("missing-lock-timeout", 1)],
    ),
    (
        "unknown-table-as-offline",
        LT + "ALTER TABLE other ALTER COLUMN x TYPE varchar(20);",
        [("change-column-type", 2)],
        [("change-column-type", 2)],
    ),
    (
        "earlier-migration-wins",
        LT + "ALTER TABLE orders ALTER COLUMN note TYPE varchar(20);\n"
        "ALTER TABLE orders ALTER COLUMN note TYPE varchar(30);",
        [("change-column-type", 2)],
        [("change-column-type", 2)],
    ),
]


def _found(sql: str, schema: Schema | None) -> Expected:
    findings = lint_text(sql, "m.sql", phase="expand", options=LintOptions(schema=schema))
    return [(f.rule, f.line) for f in findings]


@pytest.mark.parametrize(
    ("sql", "offline", "online"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rules_with_and_without_the_schema(sql: str, offline: Expected, online: Expected) -> None:
    assert _found(sql, None) == offline
    assert _found(sql, SCHEMA) == online


def test_messages_name_the_table_size() -> None:
    (finding,) = lint_text(
        LT + "CREATE INDEX orders_code ON orders (code);",
        "m.sql",
        options=LintOptions(schema=SCHEMA),
    )
    assert finding.message.endswith("(public.orders: about 1,204,311 rows, 312 MiB with indexes)")


def test_drop_index_names_its_table_size() -> None:
    (finding,) = lint_text(
        LT + "DROP INDEX orders_note_idx;", "m.sql", options=LintOptions(schema=SCHEMA)
    )
    assert finding.rule == "drop-index-without-concurrently"
    assert finding.message.endswith("(public.orders: about 1,204,311 rows, 312 MiB with indexes)")


def test_offline_messages_are_unchanged() -> None:
    sql = LT + "CREATE INDEX orders_code ON orders (code);"
    offline = lint_text(sql, "m.sql")
    assert offline == lint_text(sql, "m.sql", options=LintOptions(schema=Schema()))


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (8192, "8.0 KiB"),
        (327_155_712, "312 MiB"),
        (1_610_612_736, "1.5 GiB"),
    ],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


@pytest.mark.parametrize(
    ("typname", "typmod", "array", "expected"),
    [
        ("varchar", 104, False, ColumnType("varchar", (100,))),
        ("varchar", -1, False, ColumnType("varchar")),
        ("numeric", ((12 << 16) | 2) + 4, False, ColumnType("numeric", (12, 2))),
        ("int4", -1, True, ColumnType("int4", (), True)),
        ("timestamptz", 3, False, ColumnType("timestamptz", (3,))),
        ("bpchar", 14, False, ColumnType("bpchar", (10,))),
    ],
)
def test_catalog_types(typname: str, typmod: int, array: bool, expected: ColumnType) -> None:
    assert column_type_of(typname, typmod, array) == expected


def test_build_schema_from_catalog_rows() -> None:
    schema = build_schema(
        {
            "columns": [("public", "t", "a", "varchar", 14, False, True)],
            "tables": [("public", "t", None, 0, 8192), ("app", "u", 5.0, 8192, 16384)],
            "checks": [
                ("public", "t", "a_nn", "a", True, "CHECK ((a IS NOT NULL))"),
                ("public", "t", "b_nn", "a", False, "CHECK ((a IS NOT NULL)) NOT VALID"),
                ("public", "t", "a_len", "a", True, "CHECK ((length((a)::text) > 1))"),
            ],
            "indexes": [("public", "t_a_idx", "t")],
        },
        "h:5432/db",
    )
    assert schema.columns == {"public.t": {"a": ColumnType("varchar", (10,))}}
    assert schema.not_null == {("public.t", "a")}
    assert schema.not_null_checks == {("public.t", "a")}
    assert schema.pending_checks == {"public.t.b_nn": ("public.t", "a")}
    assert schema.indexes == {"public.t_a_idx": "public.t"}
    assert schema.tables["public.t"] == TableStats(None, 0, 8192)
    assert schema.is_empty("public.t")
    assert not schema.is_empty("app.u")
