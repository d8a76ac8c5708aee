"""Run the rules over migration files: parse once, walk the statements, keep state, report.

Parsing: libpg_query's JSON output (``pglast.parser.parse_sql_json``), decoded while the cyclic
garbage collector is paused. On a 20,000-statement file that is 4-6x faster than building
pglast's Python AST objects (docs/decisions/0100-lint-parse-json.md).

The whole file goes through the parser once (so SQL that does not parse is always reported),
but only what the rules read is decoded: msgspec cuts the JSON at its statements without
decoding them, and each statement's tree (or the part of it its rules read) is decoded just
before its rules run and freed after (docs/decisions/0300-lint-lazy-decode.md, 0590, tree.py).
``full_tree=True`` decodes everything first with the stdlib's ``json``, as the reference for
tests and benchmarks.
"""

from __future__ import annotations

import gc
import json
import shlex
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from msgspec import Raw
from pglast import parser as pg

from nonstop.migrate.errors import MigrationSourceError
from nonstop.migrate.lint import rules as _rules  # noqa: F401  (registers the rules table)
from nonstop.migrate.lint import tree
from nonstop.migrate.lint.model import FileResult, Finding, LintInputError, LintOptions
from nonstop.migrate.lint.pieces import BadCut, cuts, parsed_pieces
from nonstop.migrate.lint.registry import DISPATCH, RULES, Context, Statement, dispatch
from nonstop.migrate.lint.schema import Schema
from nonstop.migrate.lint.source import Source
from nonstop.migrate.lint.sqltext import Node
from nonstop.migrate.lint.state import OBSERVERS, Catalog, State
from nonstop.migrate.phases import Phase, detect_phase, list_migrations
from nonstop.migrate.source import bind_batch_bounds, read_sql_file, sql_text_problem

DIRECTIVE = "nonstop-lint:"
_EMPTY: Node = {}
_TABLES = ("OBJECT_TABLE", "OBJECT_MATVIEW", None)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Decoding builds ~50 small dicts per statement and no cycles: the collector would only
    rescan them again and again (3-4x the decode time on a 20,000-statement file, and the rules
    pass after it pays again when the young objects are promoted)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_json(source: Source) -> str:
    """The file's tree as libpg_query's JSON text; SQL that does not parse raises
    LintInputError with the parser's message and position."""
    try:
        return pg.parse_sql_json(source.text)
    except pg.ParseError as exc:
        message, offset = exc.args[0], exc.args[1] if len(exc.args) > 1 else None
        at = len(source.text) if offset is None else offset
        line, column = source.char_position(at)
        where = source.line_text(line)
        raise LintInputError(
            f"{source.path}:{line}:{column}: SQL does not parse: {message}\n  {line} | {where}"
        ) from exc


def parse(source: Source) -> list[Node]:
    """The raw statements of a file (``stmt``, ``stmt_location``, ``stmt_len``), all decoded.

    SQL that does not parse raises LintInputError with the parser's message and position."""
    raw = _parse_json(source)
    with _gc_paused():
        stmts: list[Node] = json.loads(raw).get("stmts", [])
        return stmts


# --- decoding only what the rules read -------------------------------------------------------
#
# The parser's JSON is cut at its statements by msgspec without decoding their trees
# (tree.cut); each tree a rule or the state reads is decoded just before its rules run and
# dropped after (tree.node), holding only the fields read for the few kinds whose trees are
# mostly what no rule reads (CREATE INDEX, UPDATE, DELETE, SELECT).

#: Statement kinds some rule or the state reads; any other kind is kept as its name and
#: position only (the ``"*"`` rules read nothing but the kind of those).
NEEDED = frozenset(DISPATCH) | frozenset(OBSERVERS)


class _UnexpectedJSON(Exception):
    """The parser's JSON is not laid out as _cut expects (a pglast upgrade could do that):
    the caller falls back to decoding the whole tree."""


@cache
def _wanted(phase: Phase | None) -> frozenset[str] | None:
    """The statement kinds that some check or the state reads in ``phase`` (None: every kind);
    the others are only counted. Backfill's ``"*"`` rules read every kind."""
    if phase is None or "*" in dispatch(phase):
        return None
    table = dispatch(phase)
    return frozenset(kind for kind in table if not kind.startswith("AT_")) | frozenset(OBSERVERS)


class _Cut(NamedTuple):  # a named tuple: a dataclass takes ~0.4 ms more to define at import
    raw: str  # the JSON text (the nodes are views of it)
    statements: list[Statement]  # kinds and positions, no tree yet
    nodes: dict[int, Raw]  # statement index -> its node, undecoded
    total: int  # statements in the file, read or not


def _split(source: Source, phase: Phase | None = None) -> _Cut:
    """The file's JSON text cut at its statements: every statement, or with ``phase`` only
    those of the kinds read in that phase (the others are only counted)."""
    return _cut(_parse_json(source), source, phase)


def _cut(raw: str, source: Source, phase: Phase | None, first: int = 0) -> _Cut:
    """``_split`` of a tree already parsed, whose first statement is statement ``first`` of
    the file (a piece of it: pieces.py)."""
    try:
        entries = tree.cut(raw)
    except tree.Unexpected as exc:
        raise _UnexpectedJSON(str(exc)) from None
    wanted = _wanted(phase)
    statements: list[Statement] = []
    nodes: dict[int, Raw] = {}
    add = statements.append
    data = source.data
    try:
        for index, entry in enumerate(entries, first):
            ((kind, node),) = entry.stmt.items()  # ValueError unless one node
            if wanted is None or kind in wanted:
                start = entry.stmt_location
                # stmt_len 0: the last statement, without a semicolon, runs to the file's end
                length = entry.stmt_len or len(data[start:].rstrip())
                add(Statement(index, kind, _EMPTY, start, length, source))
                nodes[index] = node
    except ValueError:
        raise _UnexpectedJSON("a statement entry that is not one node") from None
    return _Cut(raw, statements, nodes, len(entries))


def lazy_statements(source: Source, phase: Phase | None) -> list[Statement]:
    """The statements of a file, each with the part of its tree the rules read in ``phase``
    (None: no tree at all, only kinds and positions)."""
    cut = _split(source)
    if phase is not None:
        for stmt in cut.statements:
            if stmt.kind in NEEDED:
                stmt.node = tree.node(stmt.kind, cut.nodes[stmt.index])
    return cut.statements


def _statements(source: Source, raw: list[Node]) -> list[Statement]:
    out = []
    for index, item in enumerate(raw):
        ((kind, node),) = item["stmt"].items()
        start = item.get("stmt_location", 0)
        # stmt_len 0: the last statement, without a semicolon, runs to the end of the file
        length = item.get("stmt_len", 0) or len(source.data[start:].rstrip())
        out.append(Statement(index, kind, node, start, length, source))
    return out


def _run_rules(ctx: Context, statements: list[Statement], nodes: dict[int, Raw] | None) -> None:
    """Each statement to the rules that target its kind (and its ALTER TABLE sub-commands) in
    this phase, then to the state; a statement nothing reads is skipped. With ``nodes`` (the
    undecoded trees), each statement's tree is decoded just before and dropped just after.

    One loop with the decoding and the state's dispatch written in (no call per statement for
    either): it runs for every statement of a file, 20,000 on the benchmark corpus."""
    table = dispatch(ctx.state.phase)
    every = table.get("*", ())
    observers = OBSERVERS
    state = ctx.state
    decode = tree.node
    for stmt in statements:
        kind = stmt.kind
        checks = table.get(kind, every)
        observer = observers.get(kind)
        if not checks and observer is None:
            continue
        if nodes is None:
            node = stmt.node
        else:
            node = stmt.node = decode(kind, nodes[stmt.index]) if kind in NEEDED else _EMPTY
        ctx.stmt = stmt
        for check in checks:
            check(ctx, node)
        # ALTER TYPE / VIEW / INDEX share AlterTableStmt; the sub-command rules are about tables
        if kind == "AlterTableStmt" and node.get("objtype") in _TABLES:
            for item in node.get("cmds", ()):
                cmd = item["AlterTableCmd"]
                for check in table.get(cmd.get("subtype", ""), ()):
                    check(ctx, cmd)
        if observer is not None:
            observer(state, node)
        if nodes is not None:
            stmt.node = _EMPTY


def lint_source(
    source: Source,
    phase: Phase,
    pg_version: int,
    catalog: Catalog,
    *,
    assume_lock_timeout: bool = False,
    full_tree: bool = False,
    schema: Schema | None = None,
) -> FileResult:
    """Every finding in one file, after ignore comments; ``catalog`` carries over between files
    (start it with ``new_catalog``); ``schema`` is the live database's, when there is one.

    ``full_tree`` decodes every statement's whole tree instead of only what the rules read
    (the same findings, slower: the reference the fast path is tested against)."""
    if phase == "backfill":
        # The runner binds the batch bounds :lo/:hi as $1/$2; read the file the same way.
        source = Source(source.path, bind_batch_bounds(source.text))
    with _gc_paused():
        # The tree lives only inside _walk: it is freed by reference counting before the
        # collector runs again, so the collector never has to traverse it (0.5 s saved on a
        # 20,000-statement file).
        def start() -> State:
            return State(
                phase, pg_version, catalog, lock_timeout=assume_lock_timeout, schema=schema
            )

        return _walk(source, start, full_tree)


def _walk(source: Source, start: Callable[[], State], full_tree: bool) -> FileResult:
    """Lint with the state ``start()`` gives: in pieces parsed on a second thread (a large
    file), else parsed at once with only what the rules read decoded, else (``full_tree``, or
    a parser output laid out unexpectedly) decoded whole."""
    state = start()
    # an ignore comment can point at a statement of any kind: then every statement is read
    reads = None if DIRECTIVE in source.text else state.phase
    if not full_tree:
        starts = cuts(source.text)
        if len(starts) > 1:
            saved = {table: dict(columns) for table, columns in state.catalog.items()}
            try:
                return _walk_pieces(source, state, starts, reads)
            except (BadCut, _UnexpectedJSON):
                # lint the whole file again from the state it started in
                state.catalog.clear()
                state.catalog.update(saved)
                state = start()
        try:
            cut = _split(source, reads)
            return _lint(source, state, cut.statements, cut.total, cut.nodes)
        except _UnexpectedJSON:
            pass  # raised before any rule ran: the state is untouched
    statements = _statements(source, parse(source))
    return _lint(source, state, statements, len(statements), None)


def _walk_pieces(
    source: Source, state: State, starts: list[int], reads: Phase | None
) -> FileResult:
    statements: list[Statement] = []
    findings: list[Finding] = []
    total = 0
    for raw in parsed_pieces(source, starts):
        cut = _cut(raw, source, reads, total)
        total += cut.total
        if cut.statements:
            context = Context(source, state, cut.statements[0], findings)
            _run_rules(context, cut.statements, cut.nodes)
            statements.extend(cut.statements)
    return _result(source, state, statements, total, findings)


def _lint(
    source: Source,
    state: State,
    statements: list[Statement],
    total: int,
    nodes: dict[int, Raw] | None,
) -> FileResult:
    findings: list[Finding] = []
    if statements:
        _run_rules(Context(source, state, statements[0], findings), statements, nodes)
    return _result(source, state, statements, total, findings)


def _result(
    source: Source, state: State, statements: list[Statement], total: int, found: list[Finding]
) -> FileResult:
    ignores, problems = _directives(source, statements)
    result = FileResult(source, state.phase, total)
    result.findings = problems + [f for f in found if not _ignored(f, ignores)]
    result.findings.sort(key=_POSITION)
    return result


_POSITION = attrgetter("line", "column", "rule")  # the order of findings in a file


def _ignored(finding: Finding, ignores: dict[int, frozenset[str]]) -> bool:
    return finding.rule in ignores.get(finding.statement, frozenset())


# --- ignore comments -------------------------------------------------------------------------


def _comments(source: Source) -> Iterator[tuple[int, str]]:
    """(character offset, body) of every comment that holds a directive, found with the SQL
    scanner so that ``nonstop-lint:`` inside a string literal is never mistaken for one."""
    for token in pg.scan(source.text):
        if token.name not in ("SQL_COMMENT", "C_COMMENT"):
            continue
        text = source.text[token.start : token.end + 1]
        body = text[2:-2] if text.startswith("/*") else text[2:]
        body = body.strip()
        if body.startswith(DIRECTIVE):
            yield token.start, body[len(DIRECTIVE) :]


def _target(source: Source, statements: list[Statement], char_offset: int) -> int | None:
    """The statement a directive comment applies to: the last one it trails on the same line,
    else the one it sits inside, else the next one after it."""
    byte_offset = len(source.text[:char_offset].encode("utf-8"))
    line = source.char_position(char_offset)[0]
    trailing = None
    for stmt in statements:
        end = stmt.start + stmt.length
        if end <= byte_offset:
            if source.byte_position(end)[0] == line:
                trailing = stmt.index
            continue
        return stmt.index if trailing is None else trailing
    return trailing


def _directives(
    source: Source, statements: list[Statement]
) -> tuple[dict[int, frozenset[str]], list[Finding]]:
    if DIRECTIVE not in source.text:  # fast path: most files have no ignore comments
        return {}, []
    ignores: dict[int, frozenset[str]] = {}
    problems: list[Finding] = []
    for offset, body in _comments(source):
        line, column = source.char_position(offset)

        def problem(
            rule_id: str, message: str, fix: str, line: int = line, column: int = column
        ) -> None:
            problems.append(
                Finding(rule_id, RULES[rule_id].severity, source.path, line, column, message, fix)
            )

        try:
            words = dict(word.partition("=")[::2] for word in shlex.split(body))
        except ValueError as exc:
            problem(
                "invalid-ignore",
                f"ignore comment cannot be read: {exc}",
                'write -- nonstop-lint: ignore=RULE reason="..."',
            )
            continue
        names = [name for name in words.get("ignore", "").split(",") if name]
        unknown = [name for name in names if name not in RULES] + [
            k for k in words if k not in ("ignore", "reason")
        ]
        if not names or unknown:
            problem(
                "invalid-ignore",
                f"ignore comment names {', '.join(map(repr, unknown)) or 'no rule'}: "
                f"known rules are {', '.join(sorted(RULES))}",
                'write -- nonstop-lint: ignore=RULE[,RULE] reason="..."',
            )
            continue
        if not words.get("reason", "").strip():
            problem(
                "ignore-without-reason",
                f"ignore of {', '.join(names)} gives no reason, so it does not apply",
                "say why the hazard is acceptable: "
                f'-- nonstop-lint: ignore={",".join(names)} reason="..."',
            )
            continue
        target = _target(source, statements, offset)
        if target is not None:
            ignores[target] = ignores.get(target, frozenset()) | frozenset(names)
    return ignores, problems


# --- many files ------------------------------------------------------------------------------


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, directories as their migrations in run order."""
    out: list[Path] = []
    for path in paths:
        out.extend(list_migrations(path) if path.is_dir() else [path])
    return out


def read(path: Path) -> Source:
    """A regular file of at most 4 MiB of UTF-8 text without NUL (source.read_sql_file)."""
    try:
        return Source(str(path), read_sql_file(path))
    except MigrationSourceError as exc:
        raise LintInputError(str(exc)) from None


def lint_text(
    text: str,
    path: str = "<sql>",
    *,
    phase: Phase | None = None,
    options: LintOptions | None = None,
    full_tree: bool = False,
) -> list[Finding]:
    """Findings for one migration given as text (phase detected from ``path`` unless given)."""
    opts = options or LintOptions()
    problem = sql_text_problem(text)
    if problem is not None:
        raise LintInputError(f"{path}:{problem[0]}: {problem[1]}")
    source = Source(path, text)
    chosen = phase or opts.phase or detect_phase(Path(path), text)
    return lint_source(
        source,
        chosen,
        opts.pg_version,
        new_catalog(opts),
        assume_lock_timeout=opts.assume_lock_timeout,
        full_tree=full_tree,
        schema=opts.schema,
    ).findings


def new_catalog(options: LintOptions) -> Catalog:
    """The column types a run starts from: the live schema's, else none."""
    return options.schema.catalog() if options.schema is not None else {}


def lint_files(paths: Iterable[Path], options: LintOptions | None = None) -> list[FileResult]:
    """Lint files in order; a table's column types carry from one file to the next."""
    opts = options or LintOptions()
    catalog = new_catalog(opts)
    results = []
    for path in expand_paths(paths):
        source = read(path)
        phase = opts.phase or detect_phase(path, source.text)
        results.append(
            lint_source(
                source,
                phase,
                opts.pg_version,
                catalog,
                assume_lock_timeout=opts.assume_lock_timeout,
                schema=opts.schema,
            )
        )
    return results


def apply_fixes(text: str, findings: list[Finding]) -> str:
    """The text with every mechanical fix written in: per statement the first replacement, and
    one ``SET lock_timeout`` inserted before the first statement that needs it (it stays set
    for the statements after it)."""
    source = Source("", text)
    try:
        found = _split(source).statements
    except _UnexpectedJSON:
        found = _statements(source, parse(source))
    statements = {s.index: s for s in found}
    prefix: dict[int, str] = {}
    replace: dict[int, str] = {}
    for finding in sorted(findings, key=lambda f: f.statement):
        if finding.replacement is None or finding.statement not in statements:
            continue
        if finding.insert:
            if not prefix:
                prefix[finding.statement] = finding.replacement
        else:
            replace.setdefault(finding.statement, finding.replacement)
    data = source.data
    for index in sorted(prefix.keys() | replace.keys(), reverse=True):
        stmt = statements[index]
        new = prefix.get(index, "") + replace.get(index, stmt.sql)
        data = data[: stmt.start] + new.encode("utf-8") + data[stmt.start + stmt.length :]
    return data.decode("utf-8")


def describe_rules() -> list[dict[str, Any]]:
    return [
        {"rule": r.id, "severity": r.severity, "description": r.description}
        for r in sorted(RULES.values(), key=lambda r: r.id)
    ]
