"""Safe rewrites that ``--fix`` writes in place of a hazardous statement.

Each function gets the statement's own SQL text, re-parses it into pglast's Python AST, changes
the node and prints it back with pglast's deparser, so quoting and syntax stay right. The
printed statement loses the comments inside it; comments around it stay where they were.
The text returned has no closing semicolon: the original one still follows it in the file.
"""

from __future__ import annotations

from typing import Any

from pglast import ast, parse_sql
from pglast.stream import RawStream

from nonstop.migrate.lint.sqltext import quote_ident

LOCK_TIMEOUT = "SET lock_timeout = '2s';\n"
_MAX_NAME = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer identifiers


def constraint_name(*parts: str) -> str:
    """PostgreSQL-style default name: (orders, customer_id, fkey) -> orders_customer_id_fkey."""
    base, suffix = "_".join(parts[:-1]), parts[-1]
    return f"{base[: _MAX_NAME - len(suffix) - 1]}_{suffix}"


def _one(sql: str) -> Any:
    return parse_sql(sql)[0].stmt


def outside_transaction(sql: str, in_transaction: bool) -> str:
    """Close the open transaction around ``sql`` when a CONCURRENTLY statement sits inside one."""
    return f"COMMIT;\n{sql};\nBEGIN" if in_transaction else sql


def concurrent_index(sql: str, in_transaction: bool) -> str:
    node = _one(sql)
    node.concurrent = True
    return outside_transaction(RawStream()(node), in_transaction)


def concurrent_drop_index(sql: str, in_transaction: bool) -> str:
    node = _one(sql)
    node.concurrent = True
    return outside_transaction(RawStream()(node), in_transaction)


def concurrent_reindex(sql: str, in_transaction: bool) -> str:
    node = _one(sql)
    node.params = (*(node.params or ()), ast.DefElem(defname="concurrently"))
    return outside_transaction(RawStream()(node), in_transaction)


def not_valid_then_validate(sql: str, table_sql: str, name: str) -> str:
    """``ALTER TABLE t ADD CONSTRAINT c ... NOT VALID; ALTER TABLE t VALIDATE CONSTRAINT c``."""
    node = _one(sql)
    constraint = node.cmds[0].def_
    constraint.conname = name
    constraint.skip_validation = True
    constraint.initially_valid = False
    return f"{RawStream()(node)};\nALTER TABLE {table_sql} VALIDATE CONSTRAINT {quote_ident(name)}"


def set_not_null_sequence(table_sql: str, column: str, name: str) -> str:
    """SET NOT NULL without a long ACCESS EXCLUSIVE scan (PostgreSQL 12+)."""
    col, check = quote_ident(column), quote_ident(name)
    return (
        f"ALTER TABLE {table_sql} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL) NOT VALID;\n"
        f"ALTER TABLE {table_sql} VALIDATE CONSTRAINT {check};\n"
        f"ALTER TABLE {table_sql} ALTER COLUMN {col} SET NOT NULL;\n"
        f"ALTER TABLE {table_sql} DROP CONSTRAINT {check}"
    )


def unique_using_index(
    table_sql: str, name: str, keys: list[str], primary: bool, in_transaction: bool
) -> str:
    """Build the index CONCURRENTLY, then attach it as the constraint (brief lock only)."""
    index, columns = quote_ident(name), ", ".join(quote_ident(key) for key in keys)
    kind = "PRIMARY KEY" if primary else "UNIQUE"
    build = outside_transaction(
        f"CREATE UNIQUE INDEX CONCURRENTLY {index} ON {table_sql} ({columns})", in_transaction
    )
    return f"{build};\nALTER TABLE {table_sql} ADD CONSTRAINT {index} {kind} USING INDEX {index}"
