"""The options ``nonstop migrate lint`` takes for Alembic and Django projects, and the step
that lints a framework project instead of SQL files (nonstop.migrate.frameworks)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from nonstop.errors import UsageError
from nonstop.migrate.lint import FileResult, LintOptions

DEFAULT_CACHE = Path(".nonstop/cache/lint")


@dataclass(frozen=True)
class FrameworkOptions:
    tool: str | None = None
    settings: str | None = None
    python: str | None = None
    cache_dir: Path | None = None
    since: str | None = None
    since_revision: str | None = None


def framework_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the options and hands the command one ``framework`` keyword argument."""
    options = [
        click.option(
            "--tool",
            type=click.Choice(["auto", "sql", "alembic", "django"]),
            default="auto",
            show_default=True,
            help="What the paths hold; auto: alembic.ini -> Alembic, manage.py or an app's "
            "migrations/ -> Django, else SQL files.",
        ),
        click.option("--settings", help="Django settings module (default: manage.py's)."),
        click.option(
            "--python", "python_path", help="Python of the project's environment (renders SQL)."
        ),
        click.option(
            "--cache-dir",
            type=click.Path(path_type=Path),
            help=f"Where rendered SQL is cached (default {DEFAULT_CACHE} in the project).",
        ),
        click.option("--no-cache", is_flag=True, help="Render again, do not read the cache."),
        click.option("--since", help="Only migrations added or changed since this git ref."),
        click.option(
            "--since-revision",
            help="Only migrations after this revision (Alembic id, or Django app.name).",
        ),
    ]

    def wrapper(
        *args: Any,
        tool: str,
        settings: str | None,
        python_path: str | None,
        cache_dir: Path | None,
        no_cache: bool,
        since: str | None,
        since_revision: str | None,
        **kwargs: Any,
    ) -> Any:
        chosen = None if tool == "auto" else tool
        cache = None if no_cache else (cache_dir or DEFAULT_CACHE)
        kwargs["framework"] = FrameworkOptions(
            chosen, settings, python_path, cache, since, since_revision
        )
        return func(*args, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _migrations_table() -> dict[str, Any]:
    """nonstop.toml's ``[migrations]`` table here, read without full validation: a lint must
    not fail on an unrelated setting, nor pay for loading the config schema (nor for importing
    the TOML parser when there is no such file)."""
    try:
        text = Path("nonstop.toml").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return {}
    import tomllib

    try:
        table = tomllib.loads(text).get("migrations") or {}
    except ValueError:
        return {}
    return table if isinstance(table, dict) else {}


def configured_targets() -> list[Path]:
    """With no paths: the Alembic or Django project that nonstop.toml here names, if any."""
    table = _migrations_table()
    if table.get("tool") not in ("alembic", "django"):
        return []
    return [Path(str(table.get("project", ".")))]


def configured_database() -> str | None:
    """``[migrations] database_url`` when nonstop.toml here sets it (a URL or ``$VAR``)."""
    value = _migrations_table().get("database_url")
    return value if isinstance(value, str) and value else None


def lint_frameworks(
    targets: list[Path], options: LintOptions, framework: FrameworkOptions, fix: bool
) -> list[FileResult] | None:
    """Results when the targets are framework projects; None when they are SQL files (then
    ``--since`` still applies: see filter_since)."""
    sql_files = all(path.suffix == ".sql" and path.is_file() for path in targets)
    if sql_files and framework.since_revision is None:
        return None  # the usual case: nothing to detect, no framework code to load
    from nonstop.migrate.frameworks import detect, lint_project

    tool: Any = framework.tool
    projects = [detect(path, tool, framework.settings) for path in targets]
    if all(p is None for p in projects):
        if framework.since_revision is not None:
            raise UsageError("--since-revision applies to Alembic and Django projects only")
        return None
    if any(p is None for p in projects):
        raise UsageError("give either framework projects or SQL files, not both")
    if fix:
        raise UsageError("--fix rewrites SQL files only; the fix of each finding is printed")
    results: list[FileResult] = []
    for project in projects:
        assert project is not None
        cache = framework.cache_dir
        if cache is not None and not cache.is_absolute():
            cache = project.root / cache
        results.extend(
            lint_project(
                project,
                options,
                python=framework.python,
                cache_dir=cache,
                since=framework.since,
                since_revision=framework.since_revision,
            )
        )
    return results


def filter_since(results: list[FileResult], since: str | None) -> list[FileResult]:
    """SQL files: keep the results of files added or changed since the git ref."""
    if since is None:
        return results
    from nonstop.migrate.frameworks.selection import changed_since

    changed = changed_since(since, Path.cwd())
    return [r for r in results if Path(os.path.abspath(r.source.path)).resolve() in changed]
