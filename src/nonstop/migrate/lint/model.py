"""What the linter reports: findings per file, and the options that change verdicts.

Imports nothing heavy (no parser): a lint answered from the cache reads these only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple

from nonstop.errors import UsageError
from nonstop.migrate.lint.source import Source
from nonstop.migrate.phases import Phase

if TYPE_CHECKING:
    from nonstop.migrate.lint.schema import Schema

Severity = Literal["error", "warning"]

#: The PostgreSQL major version assumed when none is given (``--pg-version``).
DEFAULT_PG_VERSION = 16


def pg_version_of(value: str) -> int | None:
    """``16``, ``16.2``, ``9.6`` -> the major version that decides behaviour (16, 16, 9);
    None for anything else."""
    head = value.strip().split(".")[0]
    return int(head) if head.isdigit() and 9 <= int(head) <= 99 else None


class Finding(NamedTuple):
    """One hazard in one statement.

    ``message`` says what lock or rewrite the statement causes and what breaks; ``fix`` says the
    safe alternative in words and SQL. ``replacement`` is the SQL that ``--fix`` writes in place of
    the statement when the safe sequence is mechanical, else None.

    A named tuple: immutable like a frozen dataclass, and built 4x faster (a frozen dataclass
    sets each field through ``object.__setattr__``), which counts at 10,000 findings.
    """

    rule: str
    severity: Severity
    file: str
    line: int
    column: int
    message: str
    fix: str
    replacement: str | None = None
    statement: int = 0
    insert: bool = False  # True: --fix puts ``replacement`` before the statement, not instead

    def as_json(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "fix": self.fix,
            "autofix": self.replacement,
        }


@dataclass(frozen=True, slots=True)
class LintOptions:
    pg_version: int = DEFAULT_PG_VERSION
    phase: Phase | None = None  # None: detect per file (header, directory, default)
    # True when the files are applied by a runner that sets lock_timeout itself (nonstop's
    # migration runner runs every transactional statement under SET LOCAL lock_timeout)
    assume_lock_timeout: bool = False
    # the live database's catalog (nonstop.migrate.catalog.read_schema); None: offline
    schema: Schema | None = field(default=None, compare=False)


class LintInputError(UsageError):
    """A migration file cannot be read or does not parse (exit code 2)."""


@dataclass
class FileResult:
    source: Source
    phase: Phase
    statements: int = 0
    findings: list[Finding] = field(default_factory=list)
