"""The live schema a migration runs against, as the linter reads it: an input, never fetched here.

Offline, the linter knows a table's columns only from the migrations before the one it reads.
Given a ``Schema`` (read from the database's catalog by nonstop.migrate.catalog), it starts
from what the database holds instead:

* column types, so ``varchar(100) -> varchar(200)`` on a column created long ago is known to
  be catalog-only (types.rewrite_free);
* NOT NULL columns and validated ``CHECK (col IS NOT NULL)`` constraints, so ``SET NOT NULL``
  that has nothing to scan is not reported, and NOT VALID ones a migration goes on to validate;
* which index belongs to which table;
* each table's size: the estimated rows (``pg_class.reltuples``), the bytes of its heap
  (``pg_relation_size``: 0 means not one page, so not one row) and with indexes and TOAST
  (``pg_total_relation_size``). A rule whose cost grows with the table (a scan, a rewrite,
  an index build) says nothing on a table that is empty now; every finding on a known table
  names its size.

Worked example: ``orders`` with reltuples 1,204,311, heap 96 MiB, total 312 MiB reads
"orders: about 1,204,311 rows, 312 MiB with indexes".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nonstop.migrate.lint.types import ColumnType


@dataclass(frozen=True, slots=True)
class TableStats:
    rows: int | None  # pg_class.reltuples, an estimate; None: never vacuumed or analysed
    heap_bytes: int  # the table's own pages (all partitions of a partitioned table)
    total_bytes: int  # with indexes and TOAST

    @property
    def empty(self) -> bool:
        """Not one page: the table holds no row (a table emptied by DELETE keeps its pages
        until VACUUM truncates them, and is not called empty)."""
        return self.heap_bytes == 0

    def describe(self) -> str:
        """``about 1,204,311 rows, 312 MiB with indexes``."""
        if self.rows is None:
            rows = "row count not estimated yet"
        else:
            rows = f"about {self.rows:,} row{'s' * (self.rows != 1)}"
        if self.empty:
            rows = "empty"
        return f"{rows}, {format_bytes(self.total_bytes)} with indexes"


def format_bytes(count: int) -> str:
    """``0 B``, ``8.0 KiB``, ``312 MiB``, ``1.5 GiB``: three significant figures at most."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{count} B"
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


@dataclass(frozen=True)
class Schema:
    """What the database's catalog says before the linted migrations run; keys are
    ``schema.table`` as the linter writes them (``public.orders``)."""

    columns: dict[str, dict[str, ColumnType]] = field(default_factory=dict)
    not_null: frozenset[tuple[str, str]] = frozenset()  # (table, column) declared NOT NULL
    not_null_checks: frozenset[tuple[str, str]] = frozenset()  # validated CHECK (c IS NOT NULL)
    pending_checks: dict[str, tuple[str, str]] = field(default_factory=dict)  # NOT VALID ones
    indexes: dict[str, str] = field(default_factory=dict)  # schema.index -> table key
    tables: dict[str, TableStats] = field(default_factory=dict)
    where: str = "the database"  # host:port/dbname, for messages

    def catalog(self) -> dict[str, dict[str, ColumnType]]:
        """A fresh copy of the column types, for the linter to update as migrations change them."""
        return {table: dict(columns) for table, columns in self.columns.items()}

    def stats(self, table: str) -> TableStats | None:
        return self.tables.get(table)

    def is_empty(self, table: str) -> bool:
        stats = self.tables.get(table)
        return stats is not None and stats.empty
