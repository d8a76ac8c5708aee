"""Rewrite-free type changes, the column catalog carried across files, and phase detection."""

# ruff: noqa: E501  (tables of SQL cases: one case per row reads better than wrapped)
from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.errors import UsageError
from nonstop.migrate.lint import lint_files
from nonstop.migrate.lint.types import ColumnType, rewrite_free
from nonstop.migrate.phases import detect_phase, list_migrations

V = ColumnType

REWRITE_CASES = [
    # old, new, rewrite-free?
    (V("varchar", (50,)), V("varchar", (100,)), True),  # larger limit: catalog only
    (V("varchar", (50,)), V("varchar", (50,)), True),
    (V("varchar", (100,)), V("varchar", (50,)), False),  # smaller: must check every row
    (V("varchar", (50,)), V("varchar"), True),
    (V("varchar", (50,)), V("text"), True),
    (V("text"), V("varchar"), True),
    (V("text"), V("varchar", (20,)), False),
    (V("varchar"), V("varchar", (20,)), False),
    (V("numeric", (10, 2)), V("numeric", (12, 2)), True),  # more precision, same scale
    (V("numeric", (10, 2)), V("numeric", (12, 3)), False),  # scale change rewrites
    (V("numeric", (10, 2)), V("numeric", (8, 2)), False),
    (V("numeric", (10,)), V("numeric", (12, 0)), True),  # numeric(10) is numeric(10,0)
    (V("numeric", (10, 2)), V("numeric"), True),
    (V("numeric"), V("numeric", (10, 2)), False),
    (V("int4"), V("int8"), False),  # int -> bigint rewrites
    (V("timestamp"), V("timestamptz"), False),
    (V("cidr"), V("inet"), True),
    (V("varbit", (8,)), V("varbit", (16,)), True),
    (V("varchar", (50,), True), V("text"), False),  # array to scalar
]


@pytest.mark.parametrize(("old", "new", "free"), REWRITE_CASES, ids=lambda v: str(v))
def test_rewrite_free(old: ColumnType, new: ColumnType, free: bool) -> None:
    assert rewrite_free(old, new) is free


@pytest.mark.parametrize(
    ("created", "altered", "expected"),
    [
        ("email varchar(50)", "email TYPE varchar(100)", []),
        ("email varchar(50)", "email TYPE text", []),
        ("email character varying(50)", "email TYPE varchar(255)", []),
        ("email varchar(50)", "email TYPE varchar(20)", ["change-column-type"]),
        ("total numeric(10,2)", "total TYPE numeric(14,2)", []),
        ("total numeric(10,2)", "total TYPE numeric(14,4)", ["change-column-type"]),
        ("id int", "id TYPE bigint", ["change-column-type"]),
        (
            "email varchar(50)",
            "email TYPE varchar(100) USING email::varchar(100)",
            ["change-column-type"],
        ),
    ],
)
def test_column_types_carry_across_files(
    tmp_path: Path, created: str, altered: str, expected: list[str]
) -> None:
    (tmp_path / "0001_create.sql").write_text(f"CREATE TABLE users ({created});\n")
    (tmp_path / "0002_alter.sql").write_text(
        f"SET lock_timeout = '1s';\nALTER TABLE users ALTER COLUMN {altered};\n"
    )
    results = lint_files([tmp_path])
    assert [r.source.path for r in results] == [
        str(tmp_path / "0001_create.sql"),
        str(tmp_path / "0002_alter.sql"),
    ]
    assert [f.rule for r in results for f in r.findings] == expected


def test_type_change_message_names_old_and_new(tmp_path: Path) -> None:
    (tmp_path / "0001.sql").write_text("CREATE TABLE users (id int);\n")
    (tmp_path / "0002.sql").write_text(
        "SET lock_timeout = '1s';\nALTER TABLE users ALTER id TYPE bigint;\n"
    )
    (finding,) = [f for r in lint_files([tmp_path]) for f in r.findings]
    assert finding.message.startswith(
        "changing the type of users.id from int4 to int8 rewrites the table"
    )
    assert "expand: add the new column (id_new int8)" in finding.fix


PHASE_CASES = [
    ("m/0001.sql", "-- nonstop: phase=contract\nDROP TABLE a;", "contract"),
    ("m/0001.sql", "-- first migration\n-- nonstop: phase=backfill down=0001.down.sql\nUPDATE a SET b = 1;", "backfill"),
    ("m/backfill/0002.sql", "UPDATE a SET b = 1 WHERE id < 10;", "backfill"),
    ("m/contract/0003.sql", "-- nonstop: phase=expand\nCREATE TABLE c (id int);", "expand"),  # header wins
    ("m/0004.sql", "CREATE TABLE c (id int);", "expand"),  # default: the strictest
    ("m/0005.sql", "CREATE TABLE c (id int);\n-- nonstop: phase=contract\n", "expand"),  # not a header
    ("m/contract/x/0006.sql", "DROP TABLE d;", "contract"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "text", "phase"), PHASE_CASES)
def test_detect_phase(path: str, text: str, phase: str) -> None:
    assert detect_phase(Path(path), text) == phase


def test_unknown_phase_names_file_and_line() -> None:
    with pytest.raises(UsageError, match=r"m/0001.sql:2: unknown migration phase 'expnad'"):
        detect_phase(Path("m/0001.sql"), "\n-- nonstop: phase=expnad\nSELECT 1;")


def test_list_migrations_orders_by_file_name(tmp_path: Path) -> None:
    for name in ("contract/0003_drop.sql", "expand/0001_add.sql", "0002_copy.sql", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("SELECT 1;")
    assert [p.relative_to(tmp_path).as_posix() for p in list_migrations(tmp_path)] == [
        "expand/0001_add.sql",
        "0002_copy.sql",
        "contract/0003_drop.sql",
    ]
