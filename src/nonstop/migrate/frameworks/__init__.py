"""Lint Alembic and Django migrations with nonstop's PostgreSQL rules.

The framework renders the SQL itself (Alembic's offline ``--sql`` mode, Django's
``sqlmigrate`` machinery), in the project's own Python, per operation (render_alembic.py,
render_django.py: plain scripts that import nothing from nonstop). The SQL is linted like SQL
files, phase-aware (``nonstop_phase = "contract"`` in the module, docs/migrations-frameworks.md),
and each finding lands on the line of the operation that produced it, with the fix in the
framework's terms (fixes.py). Rendered SQL is cached by a hash of the migration files.

    project.py  which framework a path is, its migration files and settings
    render.py   the renderer subprocess, its output as units, the cache
    early.py    the renderer started by the entry point, before the CLI loads
    lint.py     units -> SQL texts -> findings at the operation's line
    selection.py only new migrations: changed since a git ref, or after a revision
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nonstop.migrate.frameworks.project import TOOLS, Project, Tool, detect
from nonstop.migrate.frameworks.selection import after_revision, changed_since
from nonstop.migrate.lint.model import FileResult, LintOptions

if TYPE_CHECKING:
    from nonstop.migrate.frameworks.render import Unit

__all__ = ["TOOLS", "Project", "Tool", "detect", "lint_project"]


def lint_project(
    project: Project,
    options: LintOptions,
    *,
    python: str | None = None,
    cache_dir: Path | None = None,
    since: str | None = None,
    since_revision: str | None = None,
) -> list[FileResult]:
    """Render (or read from the cache) and lint every migration of ``project``; results for
    the selected ones: below ``project.only``, changed since the git ref ``since``, after the
    revision ``since_revision`` (each when given)."""
    from nonstop.migrate.frameworks.render import cache_key, load, project_python

    python = project_python(project, python)
    key = cache_key(project, python)
    units = load(project, python, cache_dir, key)
    selected: set[str] | None = None
    if project.only is not None:
        prefix = str(project.only)
        selected = {u.file for u in units if u.file.startswith(prefix.rstrip("/") + "/")}
    if since is not None:
        changed = {str(p) for p in changed_since(since, project.root)}
        selected = (selected if selected is not None else {u.file for u in units}) & changed
    if since_revision is not None:
        later = after_revision(units, since_revision)
        selected = (selected if selected is not None else {u.file for u in units}) & later
    found = _every_result(project, units, options, cache_dir, key)
    return [result for file, result in found if selected is None or file in selected]


def _every_result(
    project: Project, units: list[Unit], options: LintOptions, cache_dir: Path | None, key: str
) -> list[tuple[str, FileResult]]:
    """(migration file, result) of every migration: from the results cache when neither the
    files, the options nor the linter changed (no parser or rule is loaded then)."""
    from nonstop.migrate.frameworks import results
    from nonstop.migrate.frameworks.render import cache_path

    cache = None
    if cache_dir is not None and options.schema is None:  # a live schema changes unseen
        cache = cache_path(project, cache_dir, "results")
        key = results.results_key(key, options)
        cached = results.read(cache, key)
        if cached is not None:
            return cached
    from nonstop.migrate.frameworks.lint import lint_units

    found = list(
        zip((u.file for u in units), lint_units(units, project.tool, options), strict=True)
    )
    if cache is not None:
        results.write(cache, key, found)
    return found
