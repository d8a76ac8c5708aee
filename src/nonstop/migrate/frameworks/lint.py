"""Lint rendered framework migrations with the SQL rules; report at the operation's line.

Each migration becomes one SQL text: the session state carried in (``BEGIN``, a session
``lock_timeout``), then each statement its operations produced, in order. The text is linted
like a SQL file (same rules, same phase semantics, column types carried from one migration to
the next); each finding is then moved from its line in that text to the line and column of
the operation in the Python file, and its fix is said in the framework's terms.

An ignore comment works in Python as in SQL: ``# nonstop-lint: ignore=RULE reason="..."`` at
the end of the operation's first line or on the comment lines just above it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nonstop.errors import UsageError
from nonstop.migrate.frameworks.fixes import framework_fix
from nonstop.migrate.frameworks.project import show_path
from nonstop.migrate.frameworks.render import Unit
from nonstop.migrate.lint import RULES, FileResult, Finding, LintInputError, LintOptions
from nonstop.migrate.lint.engine import lint_source, new_catalog
from nonstop.migrate.lint.source import Source
from nonstop.migrate.phases import DEFAULT_PHASE, PHASES, Phase

MARKER = "nonstop_phase"
_MARKER = re.compile(rf"^{MARKER}\s*(?::[^=\n]*)?=\s*(['\"])(.*?)\1", re.M)
_PY_DIRECTIVE = re.compile(r"#\s*(nonstop-lint:.*)$")
_PARSE_ERROR = re.compile(r"^<rendered>:(\d+):(\d+): (.*)", re.S)


def python_phase(path: Path, text: str) -> Phase:
    """A migration module's phase: ``nonstop_phase = "contract"`` at module level, else a
    parent directory named after a phase, else expand (as for SQL files)."""
    found = _MARKER.search(text)
    if found is not None:
        value = found[2]
        if value not in PHASES:
            line = text.count("\n", 0, found.start()) + 1
            raise UsageError(
                f"{show_path(str(path))}:{line}: unknown migration phase {value!r} "
                f"(expected one of {', '.join(PHASES)})"
            )
        return value
    for parent in reversed(path.parent.parts):
        if parent in PHASES:
            return parent
    return DEFAULT_PHASE


@dataclass
class _Text:
    sql: str
    starts: list[int]  # first line of each piece in ``sql``
    places: list[tuple[int, int]]  # (line, column) in the Python file of each piece


def _directives(lines: list[str], line: int) -> list[str]:
    """Ignore comments of the operation at ``line`` (1-based): trailing, or just above."""
    found = []
    if 0 < line <= len(lines) and (m := _PY_DIRECTIVE.search(lines[line - 1])):
        found.append(m[1])
    at = line - 2
    while at >= 0 and lines[at].lstrip().startswith("#"):
        if m := _PY_DIRECTIVE.search(lines[at]):
            found.append(m[1])
        at -= 1
    return found


def build_text(unit: Unit, python_lines: list[str]) -> _Text:
    first = next((s[0] for s in unit.segments if s[0] is not None), 1)
    chunks: list[str] = []
    starts: list[int] = []
    places: list[tuple[int, int]] = []
    line_no = 1
    directives: dict[int, str] = {}
    pieces = [(None, None, sql) for sql in unit.prelude] + list(unit.segments)
    for line, col, sql in pieces:
        place = (line, col or 1) if line is not None else (first, 1)
        # a lone ";" on its own line ends the statement even when the rendered text ends in a
        # line comment (Alembic writes its ";" after op.execute's text, comment or not); the
        # parser skips empty statements
        text = sql.rstrip() + "\n;"
        if line is not None:
            # every statement of the operation (Django defers some to the end) gets the
            # operation's ignore comments; a problem with one is reported once (_moved)
            if line not in directives:
                directives[line] = "".join(f"-- {d}\n" for d in _directives(python_lines, line))
            text = directives[line] + text
        starts.append(line_no)
        places.append(place)
        chunks.append(text + "\n")
        line_no += text.count("\n") + 1
    return _Text("".join(chunks), starts, places)


def lint_units(
    units: Iterable[Unit],
    framework: str,
    options: LintOptions,
    selected: set[str] | None = None,
) -> list[FileResult]:
    """Lint migrations in order (column types carry over); results for ``selected`` files
    (all when None), each finding at its operation's line in the Python file."""
    catalog = new_catalog(options)
    results = []
    for unit in units:
        path = Path(unit.file)
        try:
            python = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LintInputError(f"{show_path(unit.file)}: cannot read: {exc}") from exc
        phase = options.phase or python_phase(path, python)
        text = build_text(unit, python.splitlines())
        try:
            result = lint_source(
                Source("<rendered>", text.sql),
                phase,
                options.pg_version,
                catalog,
                assume_lock_timeout=options.assume_lock_timeout,
                schema=options.schema,
            )
        except LintInputError as exc:
            raise _moved_error(exc, unit, text) from exc
        if selected is not None and unit.file not in selected:
            continue
        shown = show_path(unit.file)
        findings = _moved(result.findings, text, shown, framework)
        if framework == "django" and phase == "expand":
            findings = sorted(
                findings + _dropped_defaults(unit, shown, findings),
                key=lambda f: (f.line, f.column, f.rule),
            )
        out = FileResult(Source(shown, python), phase, result.statements, findings)
        results.append(out)
    return results


# Django's AddField with a default on a NOT NULL column renders the column with the default,
# then drops the default (the default lives in Python): a release that does not know the column
# can no longer INSERT. Django's own SQL, so its own layout.
_ADD_DEFAULT = re.compile(
    r'ALTER TABLE "(?P<t>[^"]+)" ADD COLUMN "(?P<c>[^"]+)" .*\bDEFAULT\b.*\bNOT NULL\b', re.S
)
_DROP_DEFAULT = re.compile(r'ALTER TABLE "(?P<t>[^"]+)" ALTER COLUMN "(?P<c>[^"]+)" DROP DEFAULT')
_CREATE_TABLE = re.compile(r'CREATE TABLE "(?P<t>[^"]+)"')


def _dropped_defaults(unit: Unit, shown: str, found: list[Finding]) -> list[Finding]:
    """``add-column-not-null`` for Django's add-with-default-then-drop-it, on existing tables."""
    created = {m["t"] for _, _, sql in unit.segments if (m := _CREATE_TABLE.match(sql))}
    added: dict[tuple[str, str], tuple[int, int]] = {}
    out = []
    for line, col, sql in unit.segments:
        if line is None:
            continue
        if (m := _ADD_DEFAULT.match(sql)) and m["t"] not in created:
            added[(m["t"], m["c"])] = (line, col or 1)
        elif (m := _DROP_DEFAULT.match(sql)) and (m["t"], m["c"]) in added:
            at = added.pop((m["t"], m["c"]))
            if any(f.rule == "add-column-not-null" and (f.line, f.column) == at for f in found):
                continue
            if _ignores(unit, at[0], "add-column-not-null"):
                continue
            out.append(
                Finding(
                    "add-column-not-null",
                    RULES["add-column-not-null"].severity,
                    shown,
                    at[0],
                    at[1],
                    f"AddField adds {m['t']}.{m['c']} NOT NULL with a default, and Django drops "
                    "the default right after: every INSERT of the running release, which does "
                    f"not name {m['c']}, fails with a NOT NULL violation",
                    framework_fix("django", "add-column-not-null", ""),
                )
            )
    return out


def _ignores(unit: Unit, line: int, rule: str) -> bool:
    try:
        lines = Path(unit.file).read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    for directive in _directives(lines, line):
        words = directive.split()
        names = [w.partition("=")[2] for w in words if w.startswith("ignore=")]
        if any(rule in n.split(",") for n in names) and "reason=" in directive:
            return True
    return False


def _place(text: _Text, line: int) -> tuple[int, int]:
    return text.places[max(0, bisect_right(text.starts, line) - 1)]


def _moved(findings: list[Finding], text: _Text, shown: str, framework: str) -> list[Finding]:
    out: list[Finding] = []
    seen: set[tuple[str, int, int, str]] = set()
    for f in findings:
        line, col = _place(text, f.line)
        key = (f.rule, line, col, f.message)
        if key in seen:
            continue
        seen.add(key)
        fix = framework_fix(framework, f.rule, f.fix)  # type: ignore[arg-type]
        out.append(f._replace(file=shown, line=line, column=col, fix=fix, replacement=None))
    out.sort(key=lambda f: (f.line, f.column, f.rule))
    return out


def _moved_error(exc: LintInputError, unit: Unit, text: _Text) -> LintInputError:
    found = _PARSE_ERROR.match(str(exc))
    if found is None:
        return LintInputError(f"{show_path(unit.file)}: {exc}")
    line, _ = _place(text, int(found[1]))
    detail = found[3].splitlines()[0]
    return LintInputError(
        f"{show_path(unit.file)}:{line}: the SQL this operation renders: {detail}"
    )
