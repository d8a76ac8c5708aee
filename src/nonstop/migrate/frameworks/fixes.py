"""The safe alternative of each rule, said in the framework's own terms.

The linter's own ``fix`` text speaks SQL; a finding in an Alembic revision or a Django
migration gets the same advice written as the operations the user would change. A rule not in
a table keeps its SQL advice (run through ``op.execute`` or ``migrations.RunSQL``).
"""

from __future__ import annotations

from typing import Literal

Framework = Literal["alembic", "django"]

_CONTRACT = {
    "alembic": 'a revision marked `nonstop_phase = "contract"`',
    "django": 'a migration marked `nonstop_phase = "contract"`',
}

ALEMBIC: dict[str, str] = {
    "create-index-without-concurrently": (
        "with op.get_context().autocommit_block(): "
        "op.create_index(..., postgresql_concurrently=True, if_not_exists=True)"
    ),
    "drop-index-without-concurrently": (
        "with op.get_context().autocommit_block(): "
        "op.drop_index(..., postgresql_concurrently=True, if_exists=True)"
    ),
    "concurrently-in-transaction": (
        "run the CONCURRENTLY operation inside `with op.get_context().autocommit_block():`"
    ),
    "reindex-without-concurrently": (
        'with op.get_context().autocommit_block(): op.execute("REINDEX INDEX CONCURRENTLY ...")'
    ),
    "add-column-not-null": (
        "op.add_column(..., sa.Column(..., nullable=True)); fill it in a revision marked "
        '`nonstop_phase = "backfill"`; then NOT NULL through a validated CHECK (see set-not-null)'
    ),
    "set-not-null": (
        'op.create_check_constraint("c_nn", "t", "c IS NOT NULL", postgresql_not_valid=True); '
        'op.execute("ALTER TABLE t VALIDATE CONSTRAINT c_nn"); '
        'op.alter_column("t", "c", nullable=False); op.drop_constraint("c_nn", "t")'
    ),
    "foreign-key-without-not-valid": (
        "op.create_foreign_key(..., postgresql_not_valid=True); then "
        'op.execute("ALTER TABLE t VALIDATE CONSTRAINT fk_name") (in a later revision)'
    ),
    "check-without-not-valid": (
        "op.create_check_constraint(..., postgresql_not_valid=True); then "
        'op.execute("ALTER TABLE t VALIDATE CONSTRAINT ck_name")'
    ),
    "unique-without-index": (
        "with op.get_context().autocommit_block(): op.create_index(..., unique=True, "
        'postgresql_concurrently=True); then op.execute("ALTER TABLE t ADD CONSTRAINT c '
        'UNIQUE USING INDEX ix")'
    ),
    "volatile-default": (
        "op.add_column without server_default; op.alter_column(..., server_default=...); "
        'fill existing rows in a revision marked `nonstop_phase = "backfill"`'
    ),
    "rename-column": (
        "add the new column (op.add_column), fill and keep it in sync, switch the code, "
        "then op.drop_column the old one in " + _CONTRACT["alembic"]
    ),
    "rename-table": (
        "create the new table, copy and keep it in sync, switch the code, then "
        "op.drop_table the old one in " + _CONTRACT["alembic"]
    ),
    "drop-column": "move op.drop_column to " + _CONTRACT["alembic"],
    "drop-table": "move op.drop_table to " + _CONTRACT["alembic"],
    "change-column-type": (
        "a new column of the new type (op.add_column), a backfill revision, switch the code, "
        "drop the old column in " + _CONTRACT["alembic"]
    ),
    "missing-lock-timeout": (
        "op.execute(\"SET lock_timeout = '2s'\") first in upgrade() (or in env.py's "
        "run_migrations), or lint with --assume-lock-timeout when nonstop runs the migrations"
    ),
    "backfill-ddl": "move the schema operation to an expand or contract revision",
    "dml-outside-backfill": 'move the op.execute("UPDATE ...") to a revision marked '
    '`nonstop_phase = "backfill"`',
    "unbatched-backfill": "update in batches by key range (WHERE id BETWEEN ... AND ...)",
    "truncate": 'a batched DELETE in a revision marked `nonstop_phase = "backfill"`, '
    "or op.drop_table in " + _CONTRACT["alembic"],
}

DJANGO: dict[str, str] = {
    "create-index-without-concurrently": (
        "django.contrib.postgres.operations.AddIndexConcurrently in a migration with "
        "atomic = False (for db_index=True on a field: SeparateDatabaseAndState with "
        "AddIndexConcurrently as the database operation)"
    ),
    "drop-index-without-concurrently": (
        "django.contrib.postgres.operations.RemoveIndexConcurrently in a migration with "
        "atomic = False"
    ),
    "concurrently-in-transaction": "set atomic = False on the Migration",
    "reindex-without-concurrently": (
        'migrations.RunSQL("REINDEX INDEX CONCURRENTLY ...") in a migration with atomic = False'
    ),
    "add-column-not-null": (
        "AddField with null=True; fill it in a migration marked "
        '`nonstop_phase = "backfill"` (RunSQL/RunPython in batches); then NOT NULL through '
        "a validated CHECK (see set-not-null), or AddField with db_default= a constant"
    ),
    "set-not-null": (
        "SeparateDatabaseAndState(state_operations=[AlterField(..., null=False)], "
        "database_operations=[AddConstraintNotValid(CheckConstraint(c IS NOT NULL)), "
        'ValidateConstraint, RunSQL("ALTER TABLE t ALTER COLUMN c SET NOT NULL"), '
        "RemoveConstraint])"
    ),
    "foreign-key-without-not-valid": (
        "SeparateDatabaseAndState: the field with db_constraint=False in the state, and "
        'RunSQL("ALTER TABLE t ADD CONSTRAINT fk ... NOT VALID") then '
        'RunSQL("ALTER TABLE t VALIDATE CONSTRAINT fk") in the database'
    ),
    "check-without-not-valid": (
        "django.contrib.postgres.operations.AddConstraintNotValid, then ValidateConstraint "
        "in a later migration"
    ),
    "unique-without-index": (
        "AddIndexConcurrently of a unique index (atomic = False), then "
        'SeparateDatabaseAndState(database_operations=[RunSQL("ALTER TABLE t ADD CONSTRAINT c '
        'UNIQUE USING INDEX ix")], state_operations=[AddConstraint(...)])'
    ),
    "volatile-default": (
        "AddField with null=True and no default, then set the default and fill existing rows "
        'in a migration marked `nonstop_phase = "backfill"`'
    ),
    "rename-column": (
        "keep the column: RenameField inside SeparateDatabaseAndState(state_operations=...) "
        "with db_column= the old name, or add a new field, backfill, switch, and RemoveField "
        "in " + _CONTRACT["django"]
    ),
    "rename-table": (
        "keep the table: set Meta.db_table to the old name "
        "(SeparateDatabaseAndState for the rename)"
    ),
    "drop-column": (
        "SeparateDatabaseAndState(state_operations=[RemoveField(...)]) now, and the "
        "RemoveField on the database in " + _CONTRACT["django"]
    ),
    "drop-table": (
        "SeparateDatabaseAndState(state_operations=[DeleteModel(...)]) now, and the "
        "DeleteModel on the database in " + _CONTRACT["django"]
    ),
    "change-column-type": (
        "a new field of the new type, a backfill migration, switch the code, then "
        "RemoveField of the old one in " + _CONTRACT["django"]
    ),
    "missing-lock-timeout": (
        "migrations.RunSQL(\"SET lock_timeout = '2s'\", migrations.RunSQL.noop) first in "
        "operations, or lint with --assume-lock-timeout when nonstop runs the migrations"
    ),
    "backfill-ddl": "move the schema operation to an expand or contract migration",
    "dml-outside-backfill": (
        'move the RunSQL("UPDATE ...") to a migration marked `nonstop_phase = "backfill"`'
    ),
    "unbatched-backfill": "update in batches by key range (WHERE id BETWEEN ... AND ...)",
    "truncate": 'a batched DELETE in a migration marked `nonstop_phase = "backfill"`, '
    "or DeleteModel in " + _CONTRACT["django"],
}


def framework_fix(framework: Framework, rule: str, sql_fix: str) -> str:
    """The fix for ``rule`` in ``framework``'s terms; the SQL advice when there is none."""
    table = ALEMBIC if framework == "alembic" else DJANGO
    return table.get(rule, sql_fix)
