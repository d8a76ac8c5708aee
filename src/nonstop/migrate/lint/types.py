"""Which column type changes PostgreSQL does without rewriting or scanning the table.

``ALTER COLUMN ... TYPE`` rewrites the whole table (and every index on the column) under an
ACCESS EXCLUSIVE lock unless the old type is binary coercible to the new one and the new type
modifier accepts every old value. The safe cases kept here (PostgreSQL docs, ALTER TABLE notes):

    varchar(50) -> varchar(100)     larger limit: catalog-only
    varchar(50) -> varchar, text    no limit:     catalog-only
    text        -> varchar          no limit:     catalog-only
    numeric(10,2) -> numeric(12,2)  more precision at the same scale: catalog-only
    numeric(10,2) -> numeric        unconstrained: catalog-only
    varbit(8)   -> varbit(16), varbit
    cidr        -> inet
    any type    -> the same type and modifier

Anything else (int -> bigint, varchar(100) -> varchar(50), numeric(10,2) -> numeric(10,3),
timestamp -> timestamptz, any USING clause) rewrites or scans the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from nonstop.migrate.lint.sqltext import Node, const_value, names_of

_ALIASES = {
    "character varying": "varchar",
    "character": "bpchar",
    "char": "bpchar",
    "int": "int4",
    "integer": "int4",
    "bigint": "int8",
    "smallint": "int2",
    "decimal": "numeric",
    "bit varying": "varbit",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
}
_LIMITED = {"varchar", "varbit"}  # one modifier: a length limit; absent means unlimited


@dataclass(frozen=True, slots=True)
class ColumnType:
    name: str
    mods: tuple[int, ...] = ()
    array: bool = False

    def __str__(self) -> str:
        mods = f"({','.join(map(str, self.mods))})" if self.mods else ""
        return f"{self.name}{mods}{'[]' if self.array else ''}"


def column_type(type_name: Node) -> ColumnType:
    """``{"names": [pg_catalog, varchar], "typmods": [10]}`` -> ColumnType("varchar", (10,))."""
    name = names_of(type_name.get("names", []))[-1]
    typmods = type_name.get("typmods")
    mods = (
        tuple(value for value in map(const_value, typmods) if isinstance(value, int))
        if typmods
        else ()
    )
    return _column_type(name, mods, bool(type_name.get("arrayBounds")))


@lru_cache(maxsize=1024)
def _column_type(name: str, mods: tuple[int, ...], array: bool) -> ColumnType:
    """One (immutable) ColumnType per distinct type: a migration names few."""
    return ColumnType(_ALIASES.get(name, name), mods, array)


def named_type(name: str, mods: tuple[int, ...] = (), array: bool = False) -> ColumnType:
    """The type as the catalog names it (``pg_type.typname``: varchar, int4, timestamptz)."""
    return _column_type(name, mods, array)


def rewrite_free(old: ColumnType, new: ColumnType) -> bool:
    """True when changing a column from ``old`` to ``new`` needs no rewrite and no scan."""
    if old == new:
        return True
    if old.array != new.array:
        return False
    if old.name in _LIMITED and new.name == old.name:
        return not new.mods or (bool(old.mods) and new.mods[0] >= old.mods[0])
    if old.name in ("varchar", "text") and new.name in ("varchar", "text"):
        return not new.mods
    if old.name == "numeric" and new.name == "numeric":
        if not new.mods:
            return True
        if not old.mods:
            return False
        old_scale = old.mods[1] if len(old.mods) > 1 else 0
        new_scale = new.mods[1] if len(new.mods) > 1 else 0
        return new_scale == old_scale and new.mods[0] >= old.mods[0]
    return old.name == "cidr" and new.name == "inet" and not new.mods
