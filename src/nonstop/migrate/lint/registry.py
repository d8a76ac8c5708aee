"""The rules table: each rule is one small function registered with an id, a severity and a
description, and the parse-tree nodes it wants to see.

A target is either a statement node type (``"IndexStmt"``) or, for ``ALTER TABLE``, a
sub-command type (``"AT_SetNotNull"``): the engine hands each ``AlterTableCmd`` to the rules
registered for its subtype, so a rule never loops over commands it does not care about.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import NamedTuple

from nonstop.migrate.lint.model import Finding, Severity
from nonstop.migrate.lint.source import Source
from nonstop.migrate.lint.sqltext import Node, rel_key
from nonstop.migrate.lint.state import State
from nonstop.migrate.phases import PHASES, Phase


@dataclass(slots=True)
class Statement:
    index: int
    kind: str
    node: Node
    start: int  # byte offset of the first token
    length: int  # bytes, without the closing semicolon
    source: Source

    @property
    def sql(self) -> str:
        return self.source.data[self.start : self.start + self.length].decode("utf-8")

    def char_offset(self, location: int | None) -> int | None:
        """Character offset inside ``sql`` of an absolute byte ``location`` (None stays None)."""
        if location is None:
            return None
        return len(self.source.data[self.start : location].decode("utf-8"))


@dataclass(slots=True)
class Context:
    """What a rule sees: the file, the state before the statement, and a way to report."""

    source: Source
    state: State
    stmt: Statement
    findings: list[Finding] = field(default_factory=list)

    def report(
        self,
        rule_id: str,
        message: str,
        fix: str,
        *,
        location: int | None = None,
        replacement: str | None = None,
        insert: bool = False,
        severity: Severity | None = None,
        table: str | None = None,
    ) -> None:
        """Record a finding at byte ``location`` (default: the statement's first token).

        With a live schema, a finding on ``table`` (default: the statement's relation) names
        the table's size, and a rule whose cost grows with the table says nothing on one that
        is empty (schema.py)."""
        rule = RULES[rule_id]
        if self.state.schema is not None:
            sized = self._with_size(rule, message, table or self._relation())
            if sized is None:
                return
            message = sized
        at = location if location is not None and location >= self.stmt.start else self.stmt.start
        line, column = self.source.byte_position(at)
        self.findings.append(  # positional: half the time of keywords, per finding
            Finding(
                rule_id,  # rule
                severity or rule.severity,
                self.source.path,  # file
                line,
                column,
                message,
                fix,
                replacement,
                self.stmt.index,  # statement
                insert,
            )
        )

    def _with_size(self, rule: Rule, message: str, table: str | None) -> str | None:
        """The message with the table's size when the schema knows it; None when ``rule``
        costs nothing on it because it is empty."""
        assert self.state.schema is not None
        stats = self.state.schema.stats(table) if table else None
        if stats is None:
            return message
        if rule.sized and stats.empty:
            return None
        return f"{message} ({table}: {stats.describe()})"

    def _relation(self) -> str | None:
        relation = self.stmt.node.get("relation")
        return rel_key(relation) if isinstance(relation, dict) and "relname" in relation else None


Check = Callable[[Context, Node], None]


class Rule(NamedTuple):
    """A registered rule; a named tuple, as immutable as a frozen dataclass and ~0.8 ms less to
    define at start-up."""

    id: str
    severity: Severity
    description: str
    targets: tuple[str, ...]
    check: Check | None
    phases: tuple[Phase, ...] = PHASES
    #: the hazard grows with the table (a scan, a rewrite, a build): none on an empty table
    sized: bool = False


RULES: dict[str, Rule] = {}
#: target -> every check registered for it, whatever the phase
DISPATCH: dict[str, list[Check]] = {}


def rule(
    rule_id: str,
    severity: Severity,
    description: str,
    *targets: str,
    phases: tuple[Phase, ...] = PHASES,
    sized: bool = False,
) -> Callable[[Check], Check]:
    """Register ``check`` as rule ``rule_id``, run on every node of the ``targets`` types in
    migrations of the given ``phases`` (the engine does not call it in other phases).
    ``sized``: the hazard is a scan, rewrite or build that is instant on an empty table."""

    def register(check: Check) -> Check:
        _add(Rule(rule_id, severity, description, targets, check, phases, sized))
        for target in targets:
            DISPATCH.setdefault(target, []).append(check)
        return check

    return register


@cache
def dispatch(phase: Phase) -> dict[str, tuple[Check, ...]]:
    """target -> the checks to run on it in a ``phase`` migration, in registration order; the
    ``"*"`` checks are appended to every statement kind's entry and kept under ``"*"`` for the
    kinds that have no entry. Built once per phase, on first use: rules register at import."""
    table: dict[str, list[Check]] = {}
    for entry in RULES.values():
        if entry.check is not None and phase in entry.phases:
            for target in entry.targets:
                table.setdefault(target, []).append(entry.check)
    every = table.get("*", [])
    return {
        target: tuple(checks if target == "*" or target.startswith("AT_") else checks + every)
        for target, checks in table.items()
    }


def meta_rule(rule_id: str, severity: Severity, description: str) -> None:
    """Register a rule the engine reports itself (about ignore comments, not statements)."""
    _add(Rule(rule_id, severity, description, (), None))


def _add(entry: Rule) -> None:
    if entry.id in RULES:
        raise ValueError(f"rule {entry.id!r} registered twice")
    RULES[entry.id] = entry
