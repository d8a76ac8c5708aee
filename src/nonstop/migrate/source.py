"""Migration files: discovery, checksums, statements (pglast's splitter), down SQL, backfill spec.

A migration is one ``.sql`` file under the migrations directory; its name is its path relative
to that directory (``0003_email_lower.sql`` or ``backfill/0003_email_lower.sql``). Files run in
order of their file name, then path, whatever sub-directory holds them.

Conventions (docs/migrations.md has the full page):

``-- nonstop: phase=backfill table=users key=id batch=1000 pause=10ms timeout=5s``
    Header comments before the first statement. The phase itself is decided by
    :func:`nonstop.migrate.phases.detect_phase` (header, else sub-directory, else expand);
    the other keys configure a backfill.
``-- nonstop: down``
    A comment line on its own; everything after it is the down SQL that undoes an expand.
``:lo`` / ``:hi`` (or ``$1`` / ``$2``)
    In a backfill's single UPDATE: the inclusive key range of one batch.

This module reads files but touches no database; every problem is a
:class:`MigrationSourceError` naming the file and line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pglast import parse_sql
from pglast.parser import ParseError, scan, split

from nonstop.errors import UsageError
from nonstop.files import read_regular_file
from nonstop.migrate.errors import MigrationSourceError
from nonstop.migrate.phases import PHASES, detect_phase, list_migrations

HEADER_PREFIX = "-- nonstop:"
DOWN_MARKER = "-- nonstop: down"
MAX_FILE_BYTES = 4 * 1024 * 1024
"""Largest migration file read (lint and run): parsing takes about 50 bytes of memory per
byte of SQL (4 MiB: 220 MB peak), so a bigger file is refused with a message."""
DEFAULT_BATCH = 1000
DEFAULT_BATCH_TIMEOUT = 10.0
_COMMENTS = {"SQL_COMMENT", "C_COMMENT"}


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    line: int
    """1-based line of the statement's first token in its file."""
    transactional: bool = True
    """False when PostgreSQL refuses it in a transaction (CREATE INDEX CONCURRENTLY...)."""


@dataclass(frozen=True, slots=True)
class BackfillSpec:
    table: str
    key: str
    batch: int = DEFAULT_BATCH
    pause: float = 0.0
    """Seconds to sleep between batches, leaving room for the application's queries."""
    timeout: float = DEFAULT_BATCH_TIMEOUT
    """statement_timeout of each batch's UPDATE, in seconds."""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    path: Path
    phase: str
    checksum: str
    statements: tuple[Statement, ...]
    down: tuple[Statement, ...] = ()
    backfill: BackfillSpec | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def transactional(self) -> bool:
        return all(statement.transactional for statement in self.statements)


def checksum(text: str) -> str:
    import hashlib  # here: the linter reads this module and never needs a checksum

    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def discover(directory: Path, *, pg_version: int = 15) -> list[Migration]:
    """Every migration under ``directory``, in run order."""
    if not directory.is_dir():
        raise MigrationSourceError(
            str(directory), "migrations directory not found (set [migrations] dir in nonstop.toml)"
        )
    return [
        load_migration(path, directory, pg_version=pg_version)
        for path in list_migrations(directory)
    ]


def sql_text_problem(text: str) -> tuple[int, str] | None:
    """``(line, message)`` when ``text`` cannot be a migration: a NUL byte ends the text for
    PostgreSQL's parser, so what follows it would silently merge into one statement."""
    at = text.find("\x00")
    if at >= 0:
        return text.count("\n", 0, at) + 1, "contains a NUL byte (\\x00): a migration is text"
    return None


def read_sql_file(path: Path, name: str | None = None) -> str:
    """The text of a migration file: a regular file, at most MAX_FILE_BYTES, UTF-8, no NUL.
    Raise :class:`MigrationSourceError` naming the file (and line) otherwise."""
    where = name or str(path)
    try:
        data = read_regular_file(path, MAX_FILE_BYTES, "migration file")
    except UsageError as exc:
        raise MigrationSourceError(where, str(exc).removeprefix(f"{path}: ")) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationSourceError(
            where, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    problem = sql_text_problem(text)
    if problem is not None:
        raise MigrationSourceError(where, problem[1], line=problem[0])
    return text


def load_migration(path: Path, root: Path, *, pg_version: int = 15) -> Migration:
    name = path.relative_to(root).as_posix()
    text = read_sql_file(path, name)
    return parse_migration(
        name, text, phase=_phase(path, root, text), path=path, pg_version=pg_version
    )


def _phase(path: Path, root: Path, text: str) -> str:
    return detect_phase(path.relative_to(root), text)


def parse_migration(
    name: str, text: str, *, phase: str, path: Path | None = None, pg_version: int = 15
) -> Migration:
    """Parse one file's text; ``phase`` comes from the shared phase convention."""
    if phase not in PHASES:
        raise MigrationSourceError(name, f"unknown phase {phase!r}, expected one of {PHASES}")
    problem = sql_text_problem(text)
    if problem is not None:
        raise MigrationSourceError(name, problem[1], line=problem[0])
    tokens = _scan(name, text)
    options = header_options(text, tokens)
    down_at = _down_marker(text, tokens)
    up_text = text if down_at is None else text[:down_at]
    backfill = None
    if phase == "backfill":
        backfill = _backfill_spec(name, options)
        up_text = _bind_placeholders(name, up_text, tokens)
    statements = split_statements(name, up_text, pg_version=pg_version)
    if not statements:
        raise MigrationSourceError(name, "no SQL statement found")
    down: tuple[Statement, ...] = ()
    if down_at is not None:
        # Blank out the up part so that line numbers of the down statements stay true.
        if phase != "expand":
            raise MigrationSourceError(
                name,
                f"down SQL is only supported for expand migrations, this one is {phase}",
                _line(text, down_at),
            )
        down_text = "".join("\n" if ch == "\n" else " " for ch in text[:down_at]) + text[down_at:]
        down = split_statements(name, down_text, pg_version=pg_version)
    if backfill is not None:
        _check_backfill_statement(name, statements)
    return Migration(
        name=name,
        path=path or Path(name),
        phase=phase,
        checksum=checksum(text),
        statements=statements,
        down=down,
        backfill=backfill,
        options=options,
    )


def _scan(name: str, text: str) -> list[Any]:
    try:
        return list(scan(text))
    except ParseError as exc:
        raise MigrationSourceError(name, str(exc.args[0]), _line(text, _location(exc))) from None


def _location(exc: ParseError) -> int:
    return int(exc.args[1]) if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, max(offset, 0)) + 1


def header_options(text: str, tokens: list[Any]) -> dict[str, str]:
    """``key=value`` pairs of the ``-- nonstop:`` comments before the first statement.

    >>> text = "-- nonstop: phase=backfill table=users key=id\\nUPDATE users SET a = 1"
    >>> header_options(text, list(scan(text)))
    {'phase': 'backfill', 'table': 'users', 'key': 'id'}
    """
    options: dict[str, str] = {}
    for token in tokens:
        if token.name not in _COMMENTS:
            break
        comment = text[token.start : token.end + 1].strip()
        if not comment.startswith(HEADER_PREFIX):
            continue
        for word in comment[len(HEADER_PREFIX) :].split():
            key, sep, value = word.partition("=")
            if sep:
                options[key.strip().lower()] = value.strip()
    return options


def _down_marker(text: str, tokens: list[Any]) -> int | None:
    for token in tokens:
        if token.name == "SQL_COMMENT":
            comment = " ".join(text[token.start : token.end + 1].split()).lower()
            if comment == DOWN_MARKER:
                return int(token.start)
    return None


def bind_batch_bounds(text: str) -> str:
    """``text`` with ``:lo``/``:hi`` written as ``$1``/``$2`` (same length, so offsets and lines
    hold): what tools that parse plain PostgreSQL (the linter) need to read a backfill file.
    Text the scanner cannot read comes back unchanged (the parser then reports it)."""
    try:
        tokens = list(scan(text))
    except Exception:  # pglast raises its own error types for unreadable SQL
        return text
    return _substitute(text, tokens)[0]


_BOUNDS = {"lo": "$1 ", "hi": "$2 "}


def _substitute(text: str, tokens: list[Any]) -> tuple[str, set[str]]:
    chars = list(text)
    seen = set()
    for colon, ident in itertools.pairwise([t for t in tokens if t.start < len(text)]):
        if colon.name != "ASCII_58" or ident.name != "IDENT" or ident.start != colon.end + 1:
            continue
        word = text[ident.start : ident.end + 1].lower()
        if word in _BOUNDS:
            chars[colon.start : ident.end + 1] = _BOUNDS[word]
            seen.add(word)
    return "".join(chars), seen


def _bind_placeholders(name: str, text: str, tokens: list[Any]) -> str:
    """Turn ``:lo``/``:hi`` into ``$1``/``$2`` (same length, so offsets and lines hold).

    ``$1``/``$2`` written directly mean the same (PostgreSQL's own parameter syntax, which tools
    that parse plain PostgreSQL accept). Found with PostgreSQL's scanner: a ``':lo'`` string or
    a ``::type`` cast stays as is."""
    bound, seen = _substitute(text, tokens)
    names = _BOUNDS
    for token in tokens:
        if token.name == "PARAM" and token.start < len(text):
            param = text[token.start : token.end + 1]
            if param not in ("$1", "$2"):
                raise MigrationSourceError(
                    name,
                    f"a backfill knows only $1 (= :lo) and $2 (= :hi), found {param}",
                    _line(text, token.start),
                )
            seen.add("lo" if param == "$1" else "hi")
    missing = [f":{word}" for word in names if word not in seen]
    if missing:
        raise MigrationSourceError(
            name,
            f"a backfill UPDATE must use the batch bounds {' and '.join(missing)}, "
            "e.g. WHERE id BETWEEN :lo AND :hi",
        )
    return bound


def _backfill_spec(name: str, options: dict[str, str]) -> BackfillSpec:
    missing = [key for key in ("table", "key") if not options.get(key)]
    if missing:
        raise MigrationSourceError(
            name,
            f"backfill header needs {' and '.join(missing)}, e.g. "
            "-- nonstop: phase=backfill table=users key=id batch=1000",
            1,
        )
    try:
        batch = int(options.get("batch", DEFAULT_BATCH))
        if batch < 1:
            raise ValueError
    except ValueError:
        raise MigrationSourceError(
            name, f"batch: expected a positive integer, got {options['batch']!r}", 1
        ) from None
    durations = {}
    for key, default in (("pause", 0.0), ("timeout", DEFAULT_BATCH_TIMEOUT)):
        try:
            durations[key] = _duration(options[key]) if key in options else default
        except ValueError as exc:
            raise MigrationSourceError(name, f"{key}: {exc}", 1) from None
    return BackfillSpec(
        options["table"], options["key"], batch, durations["pause"], durations["timeout"]
    )


def _check_backfill_statement(name: str, statements: tuple[Statement, ...]) -> None:
    if len(statements) != 1:
        raise MigrationSourceError(
            name,
            f"a backfill holds exactly one UPDATE, found {len(statements)} statements",
            statements[1].line if len(statements) > 1 else None,
        )
    node = parse_sql(statements[0].sql)[0].stmt
    if type(node).__name__ != "UpdateStmt":
        raise MigrationSourceError(
            name, f"a backfill holds one UPDATE, found {_kind(node)}", statements[0].line
        )


def split_statements(name: str, text: str, *, pg_version: int = 15) -> tuple[Statement, ...]:
    """Statements of ``text`` with their line, split by PostgreSQL's own parser."""
    try:
        slices = list(split(text, only_slices=True))
    except ParseError as exc:
        raise MigrationSourceError(name, str(exc.args[0]), _line(text, _location(exc))) from None
    out = []
    for part in slices:
        sql = text[part]
        start = part.start + _first_token_offset(sql)
        node = parse_sql(sql)[0].stmt
        kind = _kind(node)
        if kind == "TransactionStmt":
            raise MigrationSourceError(
                name,
                "remove BEGIN/COMMIT: nonstop runs each migration in a transaction by itself",
                _line(text, start),
            )
        out.append(Statement(sql, _line(text, start), _transactional(node, pg_version)))
    return tuple(out)


def _first_token_offset(sql: str) -> int:
    for token in scan(sql):
        if token.name not in _COMMENTS:
            return int(token.start)
    return 0


def _kind(node: object) -> str:
    return type(node).__name__


NON_TRANSACTIONAL = {
    "VacuumStmt",
    "CreatedbStmt",
    "DropdbStmt",
    "AlterSystemStmt",
    "CreateTableSpaceStmt",
    "DropTableSpaceStmt",
}


def _transactional(node: Any, pg_version: int) -> bool:
    """False when PostgreSQL refuses ``node`` inside a transaction block."""
    kind = _kind(node)
    if kind in NON_TRANSACTIONAL:
        return False
    if kind in ("IndexStmt", "DropStmt") and getattr(node, "concurrent", False):
        return False
    if kind == "ReindexStmt":
        params = getattr(node, "params", None) or ()
        return not any(getattr(p, "defname", "") == "concurrently" for p in params)
    # ALTER TYPE ... ADD VALUE could not run in a transaction before PostgreSQL 12.
    return not (kind == "AlterEnumStmt" and pg_version < 12 and getattr(node, "newVal", None))


def _duration(text: str) -> float:
    # imported here: nonstop.config loads pydantic (0.1-0.3 s), which the linter never needs
    from nonstop.config.units import parse_duration

    return parse_duration(text)
