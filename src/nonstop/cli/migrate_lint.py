"""``nonstop migrate lint PATH...``: check migrations for statements that break a live release.

Exit codes: 0 no errors (warnings allowed), 1 at least one error, 2 unreadable input or SQL that
does not parse. The ``migrate`` group registers it: ``from nonstop.cli.migrate_lint import lint``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nonstop.cli.migrate_frameworks import (
    FrameworkOptions,
    configured_database,
    configured_targets,
    filter_since,
    framework_options,
    lint_frameworks,
)
from nonstop.errors import UsageError
from nonstop.migrate.errors import DatabaseUnavailable
from nonstop.migrate.lint import load_engine
from nonstop.migrate.lint.model import (
    DEFAULT_PG_VERSION,
    FileResult,
    LintOptions,
    pg_version_of,
)
from nonstop.migrate.lint.report import print_human, to_github, to_json
from nonstop.migrate.phases import PHASES, Phase

if TYPE_CHECKING:
    from nonstop.migrate.lint.schema import Schema

DEFAULT_DIR = Path("migrations")


def _pg_version(value: str) -> int:
    """``16``, ``16.2``, ``9.6`` -> the major version that decides behaviour (16, 16, 9)."""
    version = pg_version_of(value)
    if version is None:
        raise UsageError(
            f"--pg-version: expected a PostgreSQL version such as 16 or 9.6, got {value!r}"
        )
    return version


def _database_url(given: str | None, offline: bool) -> str | None:
    """The database whose catalog the lint reads: ``--database-url``, else nonstop.toml's
    ``[migrations] database_url``; None to lint offline. ``$VAR`` reads the environment; a
    variable named by the config but not set means offline (CI without a database)."""
    if offline:
        if given:
            raise UsageError("--offline and --database-url: give one or the other")
        return None
    spec = given or configured_database()
    if spec is None or not spec.startswith("$"):
        return spec
    value = os.environ.get(spec[1:], "")
    if not value and given:
        raise UsageError(f"--database-url {spec}: the environment variable {spec[1:]} is not set")
    return value or None


def _schema(url: str | None) -> Schema | None:
    if url is None:
        return None
    from nonstop.migrate.catalog import read_schema  # psycopg: only when a database is given

    return read_schema(url)


def _fix(results: list[FileResult]) -> int:
    """Write every mechanical fix into its file; returns how many files changed."""
    from nonstop.migrate.lint.engine import apply_fixes

    changed = 0
    for result in results:
        if not any(f.replacement for f in result.findings):
            continue
        fixed = apply_fixes(result.source.text, result.findings)
        if fixed != result.source.text:
            try:
                Path(result.source.path).write_text(fixed, encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"{result.source.path}: cannot write the fix: {exc}") from exc
            changed += 1
    return changed


def _run(
    paths: tuple[Path, ...],
    fmt: str,
    options: LintOptions,
    fix: bool,
    framework: FrameworkOptions | None = None,
) -> int:
    framework = framework or FrameworkOptions()
    targets = list(paths) or configured_targets()
    if not targets and not DEFAULT_DIR.is_dir():
        raise UsageError(f"no paths given and there is no {DEFAULT_DIR}/ directory here")
    targets = targets or [DEFAULT_DIR]
    for path in targets:
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
    results = lint_frameworks(targets, options, framework, fix)
    if results is None:
        # the parser and the rules: loaded only here (a framework lint may come from its cache)
        load_engine()
        from nonstop.migrate.lint.engine import lint_files

        results = lint_files(targets, options)
        changed = _fix(results) if fix else 0
        if changed:
            click.echo(
                f"fixed {changed} file{'s' * (changed != 1)}; findings after the fix:", err=True
            )
            results = lint_files(targets, options)
        results = filter_since(results, framework.since)
    findings = [f for r in results for f in r.findings]
    if fmt == "json":
        click.echo(to_json(findings))
    elif fmt == "github":
        if findings:
            click.echo(to_github(findings))
    else:
        print_human(results)
    return 1 if any(f.severity == "error" for f in findings) else 0


@click.command("lint")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["human", "json", "github"]),
    default="human",
    show_default=True,
    help="human (rich, with the offending line), json (a list of findings) or github annotations.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--pg-version",
    default=str(DEFAULT_PG_VERSION),
    show_default=True,
    help="PostgreSQL version the migrations run on; version-dependent verdicts follow it.",
)
@click.option(
    "--phase",
    type=click.Choice(PHASES),
    default=None,
    help="Treat every file as this phase instead of reading its header or directory.",
)
@click.option(
    "--assume-lock-timeout",
    is_flag=True,
    help="The runner sets lock_timeout (as nonstop migrate does): do not require it in files.",
)
@click.option(
    "--fix", is_flag=True, help="Rewrite files with the safe sequence where it is mechanical."
)
@click.option(
    "--database-url",
    help="Read the live schema (column types, constraints, table sizes) from this PostgreSQL "
    "(libpq URL, or $VAR); default: [migrations] database_url of nonstop.toml, if set.",
)
@click.option("--offline", is_flag=True, help="Do not read any database, even a configured one.")
@click.option("--list-rules", is_flag=True, help="List the rules (with --json: as JSON) and exit.")
@framework_options
@click.pass_context
def lint(
    ctx: click.Context,
    paths: tuple[Path, ...],
    fmt: str,
    as_json: bool,
    pg_version: str,
    phase: Phase | None,
    assume_lock_timeout: bool,
    fix: bool,
    database_url: str | None,
    offline: bool,
    list_rules: bool,
    framework: FrameworkOptions,
) -> None:
    """Lint PostgreSQL migrations (SQL files or directories, an Alembic project's alembic.ini,
    a Django project or app; default: migrations/) for locks, rewrites and breaking changes,
    knowing each migration's expand/backfill/contract phase."""
    fmt = "json" if as_json else fmt
    if list_rules:
        from nonstop.migrate.lint.engine import describe_rules

        rules = describe_rules()
        if fmt == "json":
            click.echo(json.dumps(rules, indent=2))
        else:
            for entry in rules:
                click.echo(f"{entry['rule']:<36} {entry['severity']:<8} {entry['description']}")
        return
    try:
        options = LintOptions(
            pg_version=_pg_version(pg_version),
            phase=phase,
            assume_lock_timeout=assume_lock_timeout,
            schema=_schema(_database_url(database_url, offline)),
        )
        code = _run(paths, fmt, options, fix, framework)
    except (UsageError, DatabaseUnavailable) as exc:  # exit 1 means findings: these are 2
        click.echo(f"error: {exc}", err=True)
        ctx.exit(2)
    ctx.exit(code)
