"""Read a live database's catalog into the linter's schema model (nonstop.migrate.lint.schema).

The I/O half of the schema-aware lint: four read-only queries on pg_catalog in one READ ONLY
transaction, with a statement timeout, so pointing the linter at production costs a few
milliseconds of catalog reads and never a lock on a user table. The rules stay pure: they
receive the ``Schema`` this returns.

Types are rebuilt from ``pg_type.typname`` and ``pg_attribute.atttypmod`` in the form the
linter gives a type written in SQL (types.ColumnType): ``varchar(100)`` is typname ``varchar``
and typmod 104 (the limit + 4 bytes of header); ``numeric(12,2)`` is typmod
``((12 << 16) | 2) + 4``; ``-1`` means no modifier.
"""

from __future__ import annotations

import re
from typing import Any

from nonstop.migrate import db
from nonstop.migrate.errors import DatabaseUnavailable
from nonstop.migrate.lint.schema import Schema, TableStats
from nonstop.migrate.lint.types import ColumnType, named_type

_USER = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"

COLUMNS = f"""
SELECT n.nspname, c.relname, a.attname, coalesce(e.typname, t.typname), a.atttypmod,
       e.oid IS NOT NULL, a.attnotnull
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem
WHERE c.relkind IN ('r', 'p', 'm') AND a.attnum > 0 AND NOT a.attisdropped AND {_USER}
"""

# A partitioned table has no pages of its own: its rows are in its partitions.
TABLES = f"""
SELECT n.nspname, c.relname,
       CASE WHEN c.relkind = 'p' THEN (SELECT sum(p.reltuples) FROM pg_partition_tree(c.oid) t
                                       JOIN pg_class p ON p.oid = t.relid
                                       WHERE t.isleaf AND p.reltuples >= 0)
            WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples END,
       CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_relation_size(t.relid)), 0)
                                       FROM pg_partition_tree(c.oid) t WHERE t.isleaf)
            ELSE pg_relation_size(c.oid) END,
       CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)
                                       FROM pg_partition_tree(c.oid) t WHERE t.isleaf)
            ELSE pg_total_relation_size(c.oid) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND {_USER}
"""

CHECKS = f"""
SELECT n.nspname, c.relname, k.conname, a.attname, k.convalidated, pg_get_constraintdef(k.oid)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.conkey[1]
WHERE k.contype = 'c' AND cardinality(k.conkey) = 1 AND {_USER}
"""

INDEXES = f"""
SELECT n.nspname, i.relname, c.relname
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE {_USER}
"""

_NOT_NULL_CHECK = re.compile(r'^CHECK \(\((?:"(?:[^"]|"")+"|\w+) IS NOT NULL\)\)( NOT VALID)?$')


def read_schema(url: str) -> Schema:
    """The schema at ``url``; UsageError for a malformed URL, DatabaseUnavailable when the
    server cannot be reached or refuses the reads (both name the database, never the password)."""
    import psycopg

    where = db.describe(url)
    with db.connect(url) as conn:
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute("SET LOCAL statement_timeout = '30s'")
                rows = {name: conn.execute(sql).fetchall() for name, sql in _QUERIES.items()}
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"cannot read the catalog of {where}: {reason}") from exc
    return build_schema(rows, where)


_QUERIES = {"columns": COLUMNS, "tables": TABLES, "checks": CHECKS, "indexes": INDEXES}


def build_schema(rows: dict[str, list[tuple[Any, ...]]], where: str) -> Schema:
    """The schema from the rows of the four queries (pure: tested from tables of rows)."""
    columns: dict[str, dict[str, ColumnType]] = {}
    not_null = set()
    for schema, table, column, typname, typmod, array, notnull in rows["columns"]:
        key = f"{schema}.{table}"
        columns.setdefault(key, {})[column] = column_type_of(typname, typmod, array)
        if notnull:
            not_null.add((key, column))
    validated, pending = set(), {}
    for schema, table, name, column, valid, definition in rows["checks"]:
        if _NOT_NULL_CHECK.match(definition):
            key = f"{schema}.{table}"
            if valid:
                validated.add((key, column))
            else:
                pending[f"{key}.{name}"] = (key, column)
    tables = {
        f"{schema}.{table}": TableStats(
            None if rows_ is None else int(rows_), int(heap or 0), int(total or 0)
        )
        for schema, table, rows_, heap, total in rows["tables"]
    }
    indexes = {f"{schema}.{index}": f"{schema}.{table}" for schema, index, table in rows["indexes"]}
    return Schema(
        columns, frozenset(not_null), frozenset(validated), pending, indexes, tables, where
    )


def column_type_of(typname: str, typmod: int, array: bool) -> ColumnType:
    """``("varchar", 104, False)`` -> varchar(100); ``("numeric", 786438, False)`` ->
    numeric(12,2); ``("int4", -1, True)`` -> int4[]."""
    return named_type(typname, _mods(typname, typmod), array)


def _mods(typname: str, typmod: int) -> tuple[int, ...]:
    if typmod < 0:
        return ()
    if typname in ("varchar", "bpchar"):
        return (typmod - 4,)
    if typname == "numeric":
        packed = typmod - 4
        return ((packed >> 16) & 0xFFFF, packed & 0xFFFF)
    return (typmod,)  # bit, varbit, time and timestamp precision: the typmod itself
