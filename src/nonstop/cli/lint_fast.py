"""``nonstop migrate lint --format json FILE.sql...`` without the click CLI.

The lint of one small migration in CI is mostly start-up: click and the CLI's own modules are
~35-45 ms of a ~0.12 s command (decision 0435), the same order as the lint itself. So the
``nonstop`` program first tries :func:`parse` on its arguments; only the plainest form of the
command is taken here, and everything else (help, ``--fix``, framework projects, a configured
database, human output, any option or value it does not know, a missing file) returns None
and goes through click as before, so usage errors keep click's wording.

What runs is what the click command runs for these arguments (lint_files, then the JSON
report, exit 1 on an error finding): tests compare both on the same files byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from nonstop.migrate.lint.model import DEFAULT_PG_VERSION, LintOptions, pg_version_of
from nonstop.migrate.phases import PHASES, Phase

_FLAGS = frozenset({"--json", "--assume-lock-timeout", "--offline"})
_VALUED = frozenset({"--format", "--phase", "--pg-version"})


class Plain(NamedTuple):
    """A ``migrate lint`` run this module can take: SQL files, JSON out, nothing else."""

    paths: list[Path]
    options: LintOptions


def parse(args: list[str]) -> Plain | None:
    """``args`` after the program name, when they are a plain JSON lint of SQL files."""
    if args[:2] != ["migrate", "lint"]:
        return None
    flags: set[str] = set()
    values: dict[str, str] = {}
    paths: list[Path] = []
    rest = iter(args[2:])
    for arg in rest:
        name, eq, value = arg.partition("=")
        if name in _VALUED:
            value = value if eq else next(rest, "")
            if not value or name in values:
                return None
            values[name] = value
        elif arg in _FLAGS:
            flags.add(arg)
        elif arg.startswith("-") or not arg:
            return None
        else:
            paths.append(Path(arg))
    return _plain(paths, flags, values)


def _plain(paths: list[Path], flags: set[str], values: dict[str, str]) -> Plain | None:
    fmt = "json" if "--json" in flags else values.get("--format", "human")
    phase = values.get("--phase")
    version = pg_version_of(values.get("--pg-version", str(DEFAULT_PG_VERSION)))
    if fmt != "json" or version is None or (phase is not None and phase not in PHASES):
        return None
    # nonstop.toml may name a database (or a framework project): read by the full command
    if "--offline" not in flags and Path("nonstop.toml").exists():
        return None
    # SQL files only: a directory, a framework project or a missing path is the full command's
    if not paths or not all(p.suffix == ".sql" and p.is_file() for p in paths):
        return None
    chosen: Phase | None = next((p for p in PHASES if p == phase), None)
    options = LintOptions(
        pg_version=version, phase=chosen, assume_lock_timeout="--assume-lock-timeout" in flags
    )
    return Plain(paths, options)


def run(plain: Plain) -> int:
    """Lint and print the JSON report; the exit code (1: an error finding, 2: bad input)."""
    from nonstop.errors import UsageError
    from nonstop.migrate.lint import load_engine

    load_engine()
    from nonstop.migrate.lint.engine import lint_files

    try:
        results = lint_files(plain.paths, plain.options)
    except UsageError as exc:  # as the click command: unreadable input or SQL that does not parse
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        return 2
    from nonstop.migrate.lint.report import to_json

    findings = [f for r in results for f in r.findings]
    sys.stdout.write(to_json(findings) + "\n")
    sys.stdout.flush()
    return 1 if any(f.severity == "error" for f in findings) else 0
