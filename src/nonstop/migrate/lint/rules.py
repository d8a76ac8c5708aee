"""The rules: one small function per hazard, registered in the rules table (registry.py).

Each message says which lock or rewrite the statement causes and what breaks for the release
that is serving traffic while the migration runs; each fix says the safe alternative. Lock
names and their effects (PostgreSQL docs, "Explicit Locking"): ACCESS EXCLUSIVE blocks reads
and writes; SHARE blocks writes; SHARE ROW EXCLUSIVE blocks writes; SHARE UPDATE EXCLUSIVE
blocks neither, only other schema changes. Any of them queued behind a long transaction also
makes every later query on the table queue behind *it*: that is why lock_timeout matters.
"""

from __future__ import annotations

from nonstop.migrate.lint import fixes
from nonstop.migrate.lint.registry import Context, meta_rule, rule
from nonstop.migrate.lint.sqltext import (
    Node,
    dotted,
    func_names,
    names_of,
    object_key,
    quote_ident,
    rel_key,
    rel_sql,
)
from nonstop.migrate.lint.types import column_type, rewrite_free

EXPAND_CONTRACT = (
    "expand: add the new {what}; backfill: copy the data in batches and keep both in sync "
    "(trigger or dual writes); release code that uses the new {what}; contract: drop the old "
    "one once no running release uses it"
)

meta_rule(
    "ignore-without-reason",
    "error",
    'An ignore comment must say why: -- nonstop-lint: ignore=RULE reason="..."',
)
meta_rule("invalid-ignore", "error", "An ignore comment that names no known rule or cannot be read")


def _an(phase: str) -> str:
    return f"an {phase}" if phase[0] in "aeiou" else f"a {phase}"


def _table(ctx: Context) -> tuple[str, str]:
    """(tracking key, SQL name) of the ALTER TABLE being checked."""
    relation = ctx.stmt.node["relation"]
    return rel_key(relation), rel_sql(relation)


def _key(ctx: Context) -> str:
    return rel_key(ctx.stmt.node["relation"])


def _no_constraints(cmd: Node) -> bool:
    """An ADD COLUMN without any column constraint (the common case): nothing to validate."""
    return cmd.get("subtype") == "AT_AddColumn" and "constraints" not in cmd["def"]["ColumnDef"]


def _single_cmd(ctx: Context) -> bool:
    return len(ctx.stmt.node.get("cmds", ())) == 1


# --- renames ---------------------------------------------------------------------------------


@rule(
    "rename-column",
    "error",
    "Renaming a column breaks the release still using the old name",
    "RenameStmt",
)
def rename_column(ctx: Context, node: Node) -> None:
    if node.get("renameType") != "OBJECT_COLUMN" or ctx.state.is_new(rel_key(node["relation"])):
        return
    table, old, new = rel_sql(node["relation"]), node.get("subname", ""), node.get("newname", "")
    ctx.report(
        "rename-column",
        f"renaming column {quote_ident(old)} of {table} to {quote_ident(new)} takes an ACCESS "
        f"EXCLUSIVE lock, and every query of the running release that uses {quote_ident(old)} "
        "fails at once (column does not exist)",
        EXPAND_CONTRACT.format(what=f"column {quote_ident(new)}"),
    )


@rule(
    "rename-table",
    "error",
    "Renaming a table breaks the release still using the old name",
    "RenameStmt",
)
def rename_table(ctx: Context, node: Node) -> None:
    if node.get("renameType") != "OBJECT_TABLE" or ctx.state.is_new(rel_key(node["relation"])):
        return
    table, new = rel_sql(node["relation"]), quote_ident(node.get("newname", ""))
    ctx.report(
        "rename-table",
        f"renaming table {table} to {new} takes an ACCESS EXCLUSIVE lock, and every query of the "
        f"running release on {table} fails at once (relation does not exist)",
        EXPAND_CONTRACT.format(what=f"table {new}"),
    )


# --- drops -----------------------------------------------------------------------------------


@rule("drop-column", "error", "Dropping a column outside a contract migration", "AT_DropColumn")
def drop_column(ctx: Context, cmd: Node) -> None:
    table, table_sql = _table(ctx)
    if ctx.state.phase == "contract" or ctx.state.is_new(table):
        return
    column = quote_ident(cmd.get("name", ""))
    ctx.report(
        "drop-column",
        f"dropping column {column} of {table_sql} in {_an(ctx.state.phase)} migration breaks the "
        f"running release, which still reads or writes {column} (column does not exist)",
        "release code that no longer uses the column first, then drop it in a contract "
        "migration (-- nonstop: phase=contract)",
    )


@rule("drop-table", "error", "Dropping a table outside a contract migration", "DropStmt")
def drop_table(ctx: Context, node: Node) -> None:
    if node.get("removeType") != "OBJECT_TABLE" or ctx.state.phase == "contract":
        return
    for names in node.get("objects", []):
        parts = names_of(names)
        if ctx.state.is_new(object_key(parts)):
            continue
        ctx.report(
            "drop-table",
            f"dropping table {dotted(parts)} in {_an(ctx.state.phase)} migration breaks the "
            "running release, which still queries it (relation does not exist)",
            "release code that no longer uses the table first, then drop it in a contract "
            "migration (-- nonstop: phase=contract)",
        )


# --- adding columns --------------------------------------------------------------------------


def _column_parts(column: Node) -> tuple[Node | None, dict[str, Node]]:
    """(DEFAULT expression or None, constraints by contype) of a ColumnDef."""
    constraints = {
        c["Constraint"]["contype"]: c["Constraint"] for c in column.get("constraints", [])
    }
    default = constraints.get("CONSTR_DEFAULT", {}).get("raw_expr")
    return default, constraints


_SERIAL = {"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"}


@rule("add-column-not-null", "error", "Adding a NOT NULL column without a default", "AT_AddColumn")
def add_column_not_null(ctx: Context, cmd: Node) -> None:
    column = cmd["def"]["ColumnDef"]
    default, constraints = _column_parts(column)
    filled = default is not None or {"CONSTR_IDENTITY", "CONSTR_GENERATED"} & constraints.keys()
    if "CONSTR_NOTNULL" not in constraints or filled or ctx.state.is_new(_key(ctx)):
        return
    if names_of(column["typeName"].get("names", []))[-1] in _SERIAL:
        return
    name = quote_ident(column["colname"])
    ctx.report(
        "add-column-not-null",
        f"adding NOT NULL column {name} to {_table(ctx)[1]} without a default fails on a table "
        "that has rows (column contains null values), and the running release's INSERTs, "
        f"which do not set {name}, would fail after it",
        f"add it with a constant default (instant from PostgreSQL 11): ADD COLUMN {name} ... "
        "NOT NULL DEFAULT <value>; or add it nullable, backfill it, then SET NOT NULL through "
        "a validated CHECK",
        location=column.get("location"),
    )


@rule(
    "add-column-default",
    "error",
    "A column default that rewrites the table (PostgreSQL < 11)",
    "AT_AddColumn",
    sized=True,
)
def add_column_default(ctx: Context, cmd: Node) -> None:
    if ctx.state.pg_version >= 11:
        return
    column = cmd["def"]["ColumnDef"]
    default, _ = _column_parts(column)
    if default is None or ctx.state.is_new(_key(ctx)):
        return
    name = quote_ident(column["colname"])
    ctx.report(
        "add-column-default",
        f"on PostgreSQL {ctx.state.pg_version}, adding column {name} with a DEFAULT rewrites "
        f"the whole of {_table(ctx)[1]} under an ACCESS EXCLUSIVE lock: reads and writes block "
        "until it ends (instant only from PostgreSQL 11)",
        f"add {name} without a default, then ALTER COLUMN {name} SET DEFAULT ... for new rows, "
        "and backfill existing rows in batches",
        location=column.get("location"),
    )


_VOLATILE = {
    "clock_timestamp", "random", "random_normal", "gen_random_uuid", "uuid_generate_v1",
    "uuid_generate_v1mc", "uuid_generate_v4", "uuidv4", "uuidv7", "timeofday", "nextval",
    "txid_current", "pg_current_xact_id", "setseed", "currval", "lastval",
}  # fmt: skip
_NOT_VOLATILE = {
    "now", "transaction_timestamp", "statement_timestamp", "current_date", "current_timestamp",
    "localtimestamp", "localtime", "lower", "upper", "concat", "coalesce", "to_jsonb",
    "jsonb_build_object", "json_build_object", "jsonb_build_array", "array", "make_interval",
    "make_date", "to_timestamp",
    "length", "md5", "abs", "round", "date_trunc", "current_setting", "inet_client_addr",
}  # fmt: skip


@rule(
    "volatile-default",
    "error",
    "A new column whose default must be computed for every row",
    "AT_AddColumn",
    sized=True,
)
def volatile_default(ctx: Context, cmd: Node) -> None:
    column = cmd["def"]["ColumnDef"]
    kind = names_of(column["typeName"].get("names", []))[-1]
    if kind not in _SERIAL and "constraints" not in column:
        return  # no default, identity or generated clause: nothing to compute per row
    if ctx.state.is_new(_key(ctx)):
        return
    default, constraints = _column_parts(column)
    serial = kind in _SERIAL
    computed = not serial and (
        "CONSTR_IDENTITY" in constraints
        or constraints.get("CONSTR_GENERATED", {}).get("generated_when") == "a"
    )
    called: list[str] = []
    if not serial and not computed:
        if default is None or ctx.state.pg_version < 11:
            return
        called = func_names(default)
        if not called:
            return  # a constant default: filled in from the catalog, no rewrite
    table_sql = _table(ctx)[1]
    name, where = quote_ident(column["colname"]), column.get("location")
    rewrite = (
        f"rewrites the whole of {table_sql} under an ACCESS EXCLUSIVE lock: reads and writes "
        "block until it ends"
    )
    if serial:
        ctx.report(
            "volatile-default",
            f"adding {kind} column {name} fills every existing row from a sequence, which "
            + rewrite,
            f"add a plain {'bigint' if kind in ('bigserial', 'serial8') else 'integer'} column, "
            f"create a sequence, SET DEFAULT nextval(...), and backfill {name} in batches",
            location=where,
        )
    elif computed:
        ctx.report(
            "volatile-default",
            f"adding identity or stored generated column {name} computes a value for every "
            f"row, which {rewrite}",
            f"add a plain column, backfill {name} in batches, then attach the identity or "
            "trigger for new rows",
            location=where,
        )
    else:
        _volatile_call(ctx, called, name, where, rewrite)


def _volatile_call(
    ctx: Context, called: list[str], name: str, where: int | None, rewrite: str
) -> None:
    volatile = [fn for fn in called if fn in _VOLATILE]
    unknown = [fn for fn in called if fn not in _VOLATILE and fn not in _NOT_VOLATILE]
    fix = (
        f"add {name} without a default (or with a constant one), then ALTER COLUMN {name} SET "
        "DEFAULT ... for new rows and backfill existing rows in batches"
    )
    if volatile:
        ctx.report(
            "volatile-default",
            f"adding column {name} with volatile default {volatile[0]}() {rewrite}",
            fix,
            location=where,
        )
    elif unknown:
        ctx.report(
            "volatile-default",
            f"column {name}'s default calls {unknown[0]}(), whose volatility the linter cannot "
            f"know: if it is VOLATILE, adding the column {rewrite}",
            fix + " (or ignore this warning with a reason if the function is STABLE or IMMUTABLE)",
            location=where,
            severity="warning",
        )


# --- constraints -----------------------------------------------------------------------------


@rule(
    "set-not-null",
    "error",
    "SET NOT NULL that scans the table under ACCESS EXCLUSIVE",
    "AT_SetNotNull",
    sized=True,
)
def set_not_null(ctx: Context, cmd: Node) -> None:
    table, table_sql = _table(ctx)
    column = cmd.get("name", "")
    proven = (table, column) in ctx.state.not_null_checks
    if ctx.state.is_new(table) or (proven and ctx.state.pg_version >= 12):
        return
    if ctx.state.is_not_null(table, column):
        return  # NOT NULL already (live schema): nothing to scan, the command changes nothing
    name = quote_ident(column)
    scan = (
        f"SET NOT NULL on {table_sql}.{name} scans the whole table under an ACCESS EXCLUSIVE "
        "lock to look for NULLs: reads and writes block until the scan ends"
    )
    if ctx.state.pg_version < 12:
        ctx.report(
            "set-not-null",
            f"on PostgreSQL {ctx.state.pg_version}, {scan} (a validated CHECK lets it skip "
            "the scan only from PostgreSQL 12)",
            f"keep {name} nullable and add CHECK ({name} IS NOT NULL) NOT VALID, then VALIDATE "
            "CONSTRAINT (no blocking lock); SET NOT NULL after upgrading to PostgreSQL 12+",
        )
        return
    check = fixes.constraint_name(table.split(".", 1)[1], column, "not_null")
    ctx.report(
        "set-not-null",
        scan,
        f"add CHECK ({name} IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it (SHARE UPDATE "
        "EXCLUSIVE: traffic keeps flowing), then SET NOT NULL (skips the scan from PostgreSQL 12), "
        "then drop the check",
        replacement=fixes.set_not_null_sequence(table_sql, column, check)
        if _single_cmd(ctx)
        else None,
    )


def _add_constraint(ctx: Context, cmd: Node) -> Node:
    return cmd.get("def", {}).get("Constraint", {})  # type: ignore[no-any-return]


def _column_constraints(cmd: Node) -> list[Node]:
    column = cmd["def"]["ColumnDef"]
    return [c["Constraint"] | {"_column": column["colname"]} for c in column.get("constraints", [])]


def _constraints(ctx: Context, cmd: Node) -> list[Node]:
    if cmd.get("subtype") == "AT_AddColumn":
        return _column_constraints(cmd)
    return [_add_constraint(ctx, cmd)]


def _contypes(cmd: Node) -> list[str | None]:
    """The contype of each constraint in the command, read without copying them (a cheap test
    before the rules below build their view of the constraints)."""
    if cmd.get("subtype") == "AT_AddColumn":
        column = cmd["def"]["ColumnDef"]
        return [c["Constraint"].get("contype") for c in column.get("constraints", [])]
    return [cmd.get("def", {}).get("Constraint", {}).get("contype")]


_INDEXED = {"CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_EXCLUSION"}


@rule(
    "unique-without-index",
    "error",
    "A UNIQUE or PRIMARY KEY constraint that builds its index under ACCESS EXCLUSIVE",
    "AT_AddConstraint",
    "AT_AddColumn",
    sized=True,
)
def unique_without_index(ctx: Context, cmd: Node) -> None:
    if _no_constraints(cmd) or _INDEXED.isdisjoint(_contypes(cmd)) or ctx.state.is_new(_key(ctx)):
        return
    table, table_sql = _table(ctx)
    for constraint in _constraints(ctx, cmd):
        contype = constraint.get("contype")
        if contype == "CONSTR_EXCLUSION":
            _exclusion(ctx, constraint, table_sql)
            continue
        if contype not in ("CONSTR_UNIQUE", "CONSTR_PRIMARY") or constraint.get("indexname"):
            continue
        primary = contype == "CONSTR_PRIMARY"
        keys = names_of(constraint.get("keys", [])) or [constraint.get("_column", "")]
        relname = table.split(".", 1)[1]
        name = constraint.get("conname") or (
            fixes.constraint_name(relname, "pkey")
            if primary
            else fixes.constraint_name(relname, *keys, "key")
        )
        kind = "PRIMARY KEY" if primary else "UNIQUE"
        plain = (
            cmd.get("subtype") == "AT_AddConstraint"
            and _single_cmd(ctx)
            and not constraint.get("including")
        )
        ctx.report(
            "unique-without-index",
            f"adding {kind} constraint {quote_ident(name)} to {table_sql} builds its index under "
            "an ACCESS EXCLUSIVE lock: reads and writes block for the whole build",
            f"CREATE UNIQUE INDEX CONCURRENTLY {quote_ident(name)} ON {table_sql} (...) outside a "
            f"transaction, then ADD CONSTRAINT {quote_ident(name)} {kind} USING INDEX "
            f"{quote_ident(name)}"
            + (" (the key columns must already be NOT NULL)" if primary else ""),
            location=constraint.get("location"),
            replacement=fixes.unique_using_index(
                table_sql, name, keys, primary, ctx.state.in_transaction
            )
            if plain
            else None,
        )


def _exclusion(ctx: Context, constraint: Node, table_sql: str) -> None:
    name = quote_ident(constraint.get("conname") or "the exclusion constraint")
    ctx.report(
        "unique-without-index",
        f"adding EXCLUDE constraint {name} to {table_sql} builds its index under an ACCESS "
        "EXCLUSIVE lock: reads and writes block for the whole build (an exclusion constraint "
        "cannot be attached from an index built concurrently)",
        "add it while the table is new or small, in a maintenance window, or enforce the rule "
        "in the application and a trigger until then",
        location=constraint.get("location"),
    )


def _validated(
    ctx: Context, cmd: Node, contype: str, rule_id: str, lock: str, name_suffix: str
) -> None:
    if _no_constraints(cmd) or contype not in _contypes(cmd) or ctx.state.is_new(_key(ctx)):
        return
    table, table_sql = _table(ctx)
    for constraint in _constraints(ctx, cmd):
        if constraint.get("contype") != contype or constraint.get("skip_validation"):
            continue
        if constraint.get("is_enforced") is False:
            continue
        columns = names_of(constraint.get("fk_attrs", [])) or [constraint.get("_column", "")]
        if contype == "CONSTR_CHECK" and not constraint.get("_column"):
            columns = [c for c in _column_refs(constraint.get("raw_expr", {}))][:1]
        relname = table.split(".", 1)[1]
        name = constraint.get("conname") or fixes.constraint_name(relname, *columns, name_suffix)
        plain = cmd.get("subtype") == "AT_AddConstraint" and _single_cmd(ctx)
        what = "FOREIGN KEY" if contype == "CONSTR_FOREIGN" else "CHECK"
        ctx.report(
            rule_id,
            f"adding {what} constraint {quote_ident(name)} to {table_sql} checks every existing "
            f"row while holding {lock}",
            "add it NOT VALID (instant; new rows are checked at once), then VALIDATE CONSTRAINT "
            f"{quote_ident(name)} in its own statement (SHARE UPDATE EXCLUSIVE: traffic keeps "
            "flowing)",
            location=constraint.get("location"),
            replacement=fixes.not_valid_then_validate(
                ctx.stmt.sql,
                table_sql,
                name,
                ctx.stmt.char_offset(constraint.get("location"))
                if not constraint.get("conname")
                else None,
            )
            if plain
            else None,
        )


def _column_refs(expr: Node) -> list[str]:
    """Columns an expression refers to, in the order they are written (PostgreSQL names an
    unnamed CHECK after the first: ``CHECK (a > b)`` on t is ``t_a_check``)."""
    found: list[str] = []
    stack: list[object] = [expr]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("ColumnRef")
            if ref is not None:
                found.extend(names_of(ref.get("fields", []))[-1:])
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


@rule(
    "foreign-key-without-not-valid",
    "error",
    "A FOREIGN KEY validated while writes to both tables block",
    "AT_AddConstraint",
    "AT_AddColumn",
    sized=True,
)
def foreign_key_without_not_valid(ctx: Context, cmd: Node) -> None:
    _validated(
        ctx,
        cmd,
        "CONSTR_FOREIGN",
        "foreign-key-without-not-valid",
        "a SHARE ROW EXCLUSIVE lock on both tables: writes to them block until the scan ends",
        "fkey",
    )


@rule(
    "check-without-not-valid",
    "error",
    "A CHECK constraint validated under ACCESS EXCLUSIVE",
    "AT_AddConstraint",
    "AT_AddColumn",
    sized=True,
)
def check_without_not_valid(ctx: Context, cmd: Node) -> None:
    _validated(
        ctx,
        cmd,
        "CONSTR_CHECK",
        "check-without-not-valid",
        "an ACCESS EXCLUSIVE lock: reads and writes block until the scan ends",
        "check",
    )


# --- column types ----------------------------------------------------------------------------


@rule(
    "change-column-type",
    "error",
    "A column type change that rewrites the table",
    "AT_AlterColumnType",
    sized=True,
)
def change_column_type(ctx: Context, cmd: Node) -> None:
    table, table_sql = _table(ctx)
    if ctx.state.is_new(table):
        return
    column = cmd.get("name", "")
    definition = cmd["def"]["ColumnDef"]
    new = column_type(definition["typeName"])
    old = ctx.state.catalog.get(table, {}).get(column)
    using = "raw_default" in definition
    if old is not None and not using and rewrite_free(old, new):
        return
    name = quote_ident(column)
    if using:
        change = f"to {new} with a USING expression"
    elif old is None:
        change = (
            f"to {new} (its current type is not in these migrations, and only a few changes, "
            "such as varchar to a longer varchar or text, skip the rewrite)"
        )
    else:
        change = f"from {old} to {new}"
    ctx.report(
        "change-column-type",
        f"changing the type of {table_sql}.{name} {change} rewrites the table and its indexes "
        "under an ACCESS EXCLUSIVE lock: reads and writes block until it ends, and the running "
        f"release may not handle {name} as {new}",
        EXPAND_CONTRACT.format(what=f"column ({name}_new {new})"),
        location=definition.get("location"),
    )


# --- indexes ---------------------------------------------------------------------------------


@rule(
    "create-index-without-concurrently",
    "error",
    "CREATE INDEX that blocks writes for the whole build",
    "IndexStmt",
    sized=True,
)
def create_index(ctx: Context, node: Node) -> None:
    if node.get("concurrent") or ctx.state.is_new(rel_key(node["relation"])):
        return
    table = rel_sql(node["relation"])
    ctx.report(
        "create-index-without-concurrently",
        f"CREATE INDEX on {table} without CONCURRENTLY holds a SHARE lock for the whole build: "
        f"every INSERT, UPDATE and DELETE on {table} blocks until it ends",
        "CREATE INDEX CONCURRENTLY, outside a transaction block",
        replacement=fixes.concurrent_index(ctx.stmt.sql, ctx.state.in_transaction),
    )


@rule(
    "drop-index-without-concurrently",
    "error",
    "DROP INDEX that takes ACCESS EXCLUSIVE on its table",
    "DropStmt",
)
def drop_index(ctx: Context, node: Node) -> None:
    if node.get("removeType") != "OBJECT_INDEX" or node.get("concurrent"):
        return
    objects = [names_of(names) for names in node.get("objects", [])]
    if all(ctx.state.is_new_object(object_key(parts)) for parts in objects):
        return
    single = len(objects) == 1 and node.get("behavior") != "DROP_CASCADE"
    ctx.report(
        "drop-index-without-concurrently",
        f"DROP INDEX {', '.join(dotted(parts) for parts in objects)} without CONCURRENTLY takes an "
        "ACCESS EXCLUSIVE lock on its table: reads and writes queue behind it",
        "DROP INDEX CONCURRENTLY, one index per statement, outside a transaction block",
        replacement=fixes.concurrent_index(ctx.stmt.sql, ctx.state.in_transaction)
        if single
        else None,
        table=ctx.state.index_table(object_key(objects[0])),
    )


def _concurrently(kind: str, node: Node) -> bool:
    if kind in ("IndexStmt", "DropStmt"):
        return bool(node.get("concurrent"))
    if kind == "ReindexStmt":
        return any(
            p.get("DefElem", {}).get("defname") == "concurrently" for p in node.get("params", [])
        )
    return any(
        c["AlterTableCmd"].get("def", {}).get("PartitionCmd", {}).get("concurrent")
        for c in node.get("cmds", [])
    )


@rule(
    "concurrently-in-transaction",
    "error",
    "A CONCURRENTLY statement inside BEGIN ... COMMIT",
    "IndexStmt",
    "DropStmt",
    "ReindexStmt",
    "AlterTableStmt",
)
def concurrently_in_transaction(ctx: Context, node: Node) -> None:
    if not ctx.state.in_transaction or not _concurrently(ctx.stmt.kind, node):
        return
    ctx.report(
        "concurrently-in-transaction",
        "a CONCURRENTLY statement cannot run inside a transaction block: PostgreSQL rejects it "
        "(ERROR: cannot run inside a transaction block) and the migration fails",
        "run it outside BEGIN ... COMMIT: commit before it, begin again after",
        replacement=fixes.outside_transaction(ctx.stmt.sql, True),
    )


@rule(
    "reindex-without-concurrently",
    "error",
    "REINDEX that blocks writes for the whole rebuild",
    "ReindexStmt",
    sized=True,
)
def reindex(ctx: Context, node: Node) -> None:
    if _concurrently("ReindexStmt", node):
        return
    blocks = (
        "REINDEX without CONCURRENTLY locks out writes to the table (and reads that use the "
        "index) for the whole rebuild"
    )
    if ctx.state.pg_version < 12:
        ctx.report(
            "reindex-without-concurrently",
            blocks,
            "build a twin with CREATE INDEX CONCURRENTLY, then DROP INDEX CONCURRENTLY the old one "
            "(REINDEX CONCURRENTLY needs PostgreSQL 12)",
        )
        return
    ctx.report(
        "reindex-without-concurrently",
        blocks,
        "REINDEX (CONCURRENTLY) ..., outside a transaction block (PostgreSQL 12+)",
        replacement=fixes.concurrent_reindex(ctx.stmt.sql, ctx.state.in_transaction),
    )


# --- whole-table operations ------------------------------------------------------------------


@rule("vacuum-full", "error", "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE", "VacuumStmt")
def vacuum_full(ctx: Context, node: Node) -> None:
    if not any(o.get("DefElem", {}).get("defname") == "full" for o in node.get("options", [])):
        return
    ctx.report(
        "vacuum-full",
        "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock: reads and writes block "
        "for the whole rewrite",
        "use plain VACUUM (no blocking lock), or rebuild online with pg_repack or pg_squeeze",
    )


@rule(
    "cluster",
    "error",
    "CLUSTER rewrites the table under ACCESS EXCLUSIVE",
    "ClusterStmt",
    sized=True,
)
def cluster(ctx: Context, node: Node) -> None:
    ctx.report(
        "cluster",
        "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock: reads and writes block for "
        "the whole rewrite",
        "rebuild online with pg_repack (--order-by), or leave ordering to a BRIN-friendly load",
    )


_REWRITES = {
    "AT_SetTableSpace": "SET TABLESPACE copies every row and index to the new tablespace",
    "AT_SetLogged": "SET LOGGED writes the whole table to the WAL",
    "AT_SetUnLogged": "SET UNLOGGED rewrites the whole table",
    "AT_SetAccessMethod": "SET ACCESS METHOD rewrites the whole table",
}


@rule(
    "table-rewrite",
    "error",
    "ALTER TABLE forms that rewrite or copy the whole table under ACCESS EXCLUSIVE",
    *_REWRITES,
    sized=True,
)
def table_rewrite(ctx: Context, cmd: Node) -> None:
    if ctx.state.is_new(_key(ctx)):
        return
    ctx.report(
        "table-rewrite",
        f"{_REWRITES[cmd['subtype']]} of {_table(ctx)[1]} while holding an ACCESS EXCLUSIVE "
        "lock: reads and writes block until it ends",
        "do it in a maintenance window, or build a new table and move to it with expand/contract "
        "(pg_repack can move a table to another tablespace online)",
    )


@rule(
    "refresh-matview-without-concurrently",
    "error",
    "REFRESH MATERIALIZED VIEW that blocks reads of the view",
    "RefreshMatViewStmt",
)
def refresh_matview(ctx: Context, node: Node) -> None:
    if node.get("concurrent") or ctx.state.is_new(rel_key(node["relation"])):
        return
    view = rel_sql(node["relation"])
    ctx.report(
        "refresh-matview-without-concurrently",
        f"REFRESH MATERIALIZED VIEW {view} without CONCURRENTLY holds an ACCESS EXCLUSIVE lock "
        f"for the whole refresh: every query reading {view} blocks until it ends",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY (needs a unique index on the view), outside a "
        "transaction block",
        replacement=fixes.outside_transaction(
            fixes.insert_after(ctx.stmt.sql, "VIEW", " CONCURRENTLY"), ctx.state.in_transaction
        ),
    )


@rule("truncate", "error", "TRUNCATE empties a table under ACCESS EXCLUSIVE", "TruncateStmt")
def truncate(ctx: Context, node: Node) -> None:
    for relation in node.get("relations", []):
        rangevar = relation["RangeVar"]
        if ctx.state.is_new(rel_key(rangevar)):
            continue
        ctx.report(
            "truncate",
            f"TRUNCATE {rel_sql(rangevar)} takes an ACCESS EXCLUSIVE lock and removes every row "
            "at once: the running release loses its data and its queries block meanwhile",
            "delete in batches in a backfill migration, or drop the table in a contract "
            "migration once no release uses it",
            location=rangevar.get("location"),
        )


# --- lock_timeout ----------------------------------------------------------------------------

_LOCK_VERB = {
    "AlterTableStmt": "ALTER TABLE",
    "RenameStmt": "ALTER ... RENAME",
    "DropStmt": "DROP",
    "IndexStmt": "CREATE INDEX",
    "CreateTrigStmt": "CREATE TRIGGER",
    "TruncateStmt": "TRUNCATE",
    "ClusterStmt": "CLUSTER",
    "VacuumStmt": "VACUUM FULL",
    "ReindexStmt": "REINDEX",
    "LockStmt": "LOCK TABLE",
    "CreateStmt": "CREATE TABLE ... REFERENCES",
    "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW",
}
_WEAK_SUBCOMMANDS = {
    "AT_ValidateConstraint",
    "AT_SetStatistics",
    "AT_SetOptions",
    "AT_ResetOptions",
}


def _takes_blocking_lock(ctx: Context, kind: str, node: Node) -> bool:
    """True when the statement queues for a lock that blocks reads or writes of a table that
    existed before this file."""
    state = ctx.state
    if kind == "AlterTableStmt":
        subtypes = {c["AlterTableCmd"].get("subtype") for c in node.get("cmds", [])}
        return not state.is_new(rel_key(node["relation"])) and not subtypes <= _WEAK_SUBCOMMANDS
    if kind in ("IndexStmt", "ClusterStmt", "RenameStmt") and "relation" in node:
        return not node.get("concurrent") and not state.is_new(rel_key(node["relation"]))
    if kind == "DropStmt":
        if node.get("concurrent") or node.get("removeType") not in ("OBJECT_TABLE", "OBJECT_INDEX"):
            return False
        objects = node.get("objects", [])
        return any(not state.is_new_object(object_key(names_of(names))) for names in objects)
    if kind == "TruncateStmt":
        return any(not state.is_new(rel_key(r["RangeVar"])) for r in node.get("relations", []))
    if kind == "CreateStmt":  # a REFERENCES clause locks the referenced, existing table
        return any(not state.is_new(rel_key(t)) for t in _referenced_tables(node))
    if kind == "VacuumStmt":
        return any(o.get("DefElem", {}).get("defname") == "full" for o in node.get("options", []))
    if kind == "ReindexStmt":
        return not _concurrently(kind, node)
    if kind == "RefreshMatViewStmt":
        return not node.get("concurrent") and not state.is_new(rel_key(node["relation"]))
    return kind in ("CreateTrigStmt", "LockStmt")


def _referenced_tables(node: Node) -> list[Node]:
    found: list[Node] = []
    for element in node.get("tableElts", []):
        constraints = element.get("ColumnDef", {}).get("constraints", [])
        if "Constraint" in element:
            constraints = [element]
        found.extend(
            c["Constraint"]["pktable"] for c in constraints if "pktable" in c["Constraint"]
        )
    return found


@rule(
    "missing-lock-timeout",
    "error",
    "A statement that queues for a blocking lock with no lock_timeout set before it",
    *_LOCK_VERB,
)
def missing_lock_timeout(ctx: Context, node: Node) -> None:
    if ctx.state.lock_timeout or not _takes_blocking_lock(ctx, ctx.stmt.kind, node):
        return
    ctx.report(
        "missing-lock-timeout",
        f"{_LOCK_VERB[ctx.stmt.kind]} waits for a blocking lock with no lock_timeout set: while "
        "it waits behind any long transaction, every later query on the table queues behind it "
        "and the application stalls",
        "SET lock_timeout = '2s' (or less) before it, and retry the migration when it times out",
        replacement=fixes.LOCK_TIMEOUT,
        insert=True,
    )


# --- phases ----------------------------------------------------------------------------------

_DATA_ONLY = {
    "InsertStmt", "UpdateStmt", "DeleteStmt", "SelectStmt", "MergeStmt", "CopyStmt", "DoStmt",
    "CallStmt", "TransactionStmt", "VariableSetStmt", "VariableShowStmt", "LockStmt",
    "ExplainStmt", "PrepareStmt", "ExecuteStmt", "DeallocateStmt", "NotifyStmt",
}  # fmt: skip


@rule(
    "backfill-ddl",
    "error",
    "A schema change inside a backfill migration",
    "*",
    phases=("backfill",),
)
def backfill_ddl(ctx: Context, node: Node) -> None:
    kind = ctx.stmt.kind
    if ctx.state.phase != "backfill" or kind in _DATA_ONLY:
        return
    if kind == "VacuumStmt" and not node.get("is_vacuumcmd"):
        return  # ANALYZE after a backfill is fine
    ctx.report(
        "backfill-ddl",
        f"{kind.removesuffix('Stmt')} changes the schema in a backfill migration: a backfill runs "
        "while the old and new releases both serve traffic and should only move data",
        "move additive changes to an expand migration and removals to a contract migration",
    )


@rule(
    "unbatched-backfill",
    "warning",
    "UPDATE or DELETE of a whole table in one transaction",
    "UpdateStmt",
    "DeleteStmt",
    phases=("backfill",),
    sized=True,
)
def unbatched_backfill(ctx: Context, node: Node) -> None:
    if (
        ctx.state.phase != "backfill"
        or "whereClause" in node
        or ctx.state.is_new(rel_key(node["relation"]))
    ):
        return
    verb = "UPDATE" if ctx.stmt.kind == "UpdateStmt" else "DELETE"
    ctx.report(
        "unbatched-backfill",
        f"{verb} of {rel_sql(node['relation'])} without WHERE touches every row in one "
        "transaction: it locks all those rows until commit (blocking the release's writes to "
        "them), bloats the table and lags replicas",
        f"{verb} in batches of a few thousand rows by key range (WHERE id >= $1 AND id < $2), "
        "one transaction per batch",
    )


@rule(
    "dml-outside-backfill",
    "warning",
    "UPDATE or DELETE in an expand or contract migration",
    "UpdateStmt",
    "DeleteStmt",
    phases=("expand", "contract"),
    sized=True,
)
def dml_outside_backfill(ctx: Context, node: Node) -> None:
    if ctx.state.phase == "backfill" or ctx.state.is_new(rel_key(node["relation"])):
        return
    verb = "UPDATE" if ctx.stmt.kind == "UpdateStmt" else "DELETE"
    ctx.report(
        "dml-outside-backfill",
        f"{verb} of {rel_sql(node['relation'])} in {_an(ctx.state.phase)} migration runs in the "
        "schema step, holding its row locks alongside the schema change's locks",
        "move data changes into a backfill migration (-- nonstop: phase=backfill)",
    )
