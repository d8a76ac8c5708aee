"""What the linter remembers between statements (one file) and between files (one run).

Rules read this state; only ``State.observe`` changes it, after the rules have looked at a
statement, so a rule always sees the schema as it was *before* the statement runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nonstop.migrate.lint.schema import Schema
from nonstop.migrate.lint.sqltext import Node, const_value, names_of, object_key, rel_key
from nonstop.migrate.lint.types import ColumnType, column_type
from nonstop.migrate.phases import Phase

#: table key -> column name -> type, from CREATE TABLE / ADD COLUMN / ALTER TYPE seen so far in
#: this run (files in run order), so ``varchar(50) -> varchar(100)`` is recognised as safe.
Catalog = dict[str, dict[str, ColumnType]]


def _is_not_null_check(constraint: Node) -> str | None:
    """The column of ``CHECK (col IS NOT NULL)``, else None."""
    test = constraint.get("raw_expr", {}).get("NullTest")
    if not test or test.get("nulltesttype") != "IS_NOT_NULL":
        return None
    fields = test.get("arg", {}).get("ColumnRef", {}).get("fields", [])
    return fields[-1]["String"]["sval"] if len(fields) == 1 and "String" in fields[0] else None


@dataclass
class State:
    phase: Phase
    pg_version: int
    catalog: Catalog
    created_tables: set[str] = field(default_factory=set)
    new_table_indexes: set[str] = field(default_factory=set)  # indexes on tables created here
    lock_timeout: bool = False
    lock_timeout_local: bool = False  # SET LOCAL: gone at COMMIT / ROLLBACK
    in_transaction: bool = False
    pending_checks: dict[str, tuple[str, str]] = field(default_factory=dict)  # NOT VALID
    not_null_checks: set[tuple[str, str]] = field(default_factory=set)  # validated
    schema: Schema | None = None  # the live database's catalog, when the lint was given one

    def __post_init__(self) -> None:
        if self.schema is not None:
            self.not_null_checks |= self.schema.not_null_checks
            self.pending_checks |= self.schema.pending_checks

    def is_not_null(self, table: str, column: str) -> bool:
        """True when the live schema says the column is NOT NULL already."""
        return self.schema is not None and (table, column) in self.schema.not_null

    def index_table(self, index: str) -> str | None:
        """The table key of an existing index (``public.orders_idx``), from the live schema."""
        return self.schema.indexes.get(index) if self.schema is not None else None

    def is_new(self, table: str) -> bool:
        """True when the table was created earlier in this file: empty, nobody else uses it."""
        return table in self.created_tables

    def is_new_object(self, key: str) -> bool:
        """A table created in this file, or an index on one (dropping it locks nobody out)."""
        return key in self.created_tables or key in self.new_table_indexes

    def observe(self, kind: str, node: Node) -> None:
        handler = OBSERVERS.get(kind)
        if handler is not None:
            handler(self, node)


def _create(state: State, node: Node) -> None:
    table = rel_key(node["relation"])
    state.created_tables.add(table)
    columns = state.catalog.setdefault(table, {})
    for element in node.get("tableElts", []):
        column = element.get("ColumnDef")
        if column and "typeName" in column:
            columns[column["colname"]] = column_type(column["typeName"])


def _create_as(state: State, node: Node) -> None:
    state.created_tables.add(rel_key(node["into"]["rel"]))


def _index(state: State, node: Node) -> None:
    if node.get("idxname"):
        schema = node["relation"].get("schemaname", "public")
        if state.is_new(rel_key(node["relation"])):
            state.new_table_indexes.add(f"{schema}.{node['idxname']}")


def _alter(state: State, node: Node) -> None:
    table = rel_key(node["relation"])
    columns = state.catalog.setdefault(table, {})
    for item in node.get("cmds", []):
        cmd = item["AlterTableCmd"]
        subtype = cmd.get("subtype")
        definition: dict[str, Any] = cmd.get("def", {})
        if subtype == "AT_AddColumn":
            column = definition["ColumnDef"]
            columns[column["colname"]] = column_type(column["typeName"])
        elif subtype == "AT_AlterColumnType":
            columns[cmd["name"]] = column_type(definition["ColumnDef"]["typeName"])
        elif subtype == "AT_DropColumn":
            columns.pop(cmd.get("name", ""), None)
        elif subtype == "AT_AddConstraint":
            _constraint(state, table, definition.get("Constraint", {}))
        elif subtype == "AT_ValidateConstraint":
            pending = state.pending_checks.pop(f"{table}.{cmd.get('name')}", None)
            if pending is not None:
                state.not_null_checks.add(pending)


def _constraint(state: State, table: str, constraint: Node) -> None:
    column = _is_not_null_check(constraint) if constraint.get("contype") == "CONSTR_CHECK" else None
    if column is None:
        return
    if constraint.get("skip_validation"):
        state.pending_checks[f"{table}.{constraint.get('conname')}"] = (table, column)
    else:
        state.not_null_checks.add((table, column))


def _rename(state: State, node: Node) -> None:
    if node.get("renameType") == "OBJECT_TABLE" and "relation" in node:
        old = rel_key(node["relation"])
        new = f"{node['relation'].get('schemaname', 'public')}.{node['newname']}"
        if old in state.catalog:
            state.catalog[new] = state.catalog.pop(old)
        if old in state.created_tables:
            state.created_tables.add(new)
    elif node.get("renameType") == "OBJECT_COLUMN" and "relation" in node:
        columns = state.catalog.get(rel_key(node["relation"]), {})
        if node.get("subname") in columns:
            columns[node["newname"]] = columns.pop(node["subname"])


def _drop(state: State, node: Node) -> None:
    if node.get("removeType") == "OBJECT_TABLE":
        for names in node.get("objects", []):
            state.catalog.pop(object_key(names_of(names)), None)


def _set(state: State, node: Node) -> None:
    if node.get("name") != "lock_timeout":
        return
    args = node.get("args", [])
    value = const_value(args[0]) if args else 0
    # SET lock_timeout = 0 (or '0', '0s') turns the timeout off again; RESET / DEFAULT do too.
    active = node.get("kind") == "VAR_SET_VALUE" and str(value).strip() not in ("0", "0s", "0ms")
    state.lock_timeout = active
    state.lock_timeout_local = active and bool(node.get("is_local"))


def _select(state: State, node: Node) -> None:
    """``SELECT set_config('lock_timeout', '2s', is_local)``: the function form of SET."""
    for target in node.get("targetList", ()):
        call = target.get("ResTarget", {}).get("val", {}).get("FuncCall")
        if not call or names_of(call.get("funcname", []))[-1:] != ["set_config"]:
            continue
        args = call.get("args", [])
        if len(args) == 3 and const_value(args[0]) == "lock_timeout":
            value = const_value(args[1])
            active = str(value).strip() not in ("0", "0s", "0ms", "None")
            state.lock_timeout = active
            state.lock_timeout_local = active and _is_true(args[2])


def _is_true(node: Node) -> bool:
    value = const_value(node)
    if value is None:  # ``true`` / ``false`` parse as a cast of a string constant to boolean
        value = const_value(node.get("TypeCast", {}).get("arg", {}))
    return value is True or str(value).lower() in ("t", "true", "on", "1")


def _transaction(state: State, node: Node) -> None:
    kind = node.get("kind", "")
    if kind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
        state.in_transaction = True
    elif kind in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_PREPARE"):
        state.in_transaction = False
        if state.lock_timeout_local:
            state.lock_timeout = state.lock_timeout_local = False


#: What each statement kind changes in the state (the engine decodes these kinds' trees).
OBSERVERS = {
    "CreateStmt": _create,
    "CreateTableAsStmt": _create_as,
    "IndexStmt": _index,
    "AlterTableStmt": _alter,
    "RenameStmt": _rename,
    "DropStmt": _drop,
    "VariableSetStmt": _set,
    "SelectStmt": _select,
    "TransactionStmt": _transaction,
}
