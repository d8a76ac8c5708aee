"""Lint Alembic and Django migrations with nonstop's PostgreSQL rules.

The framework renders the SQL itself (Alembic's offline ``--sql`` mode, Django's
``sqlmigrate`` machinery), in the project's own Python, per operation (render_alembic.py,
render_django.py: plain scripts that import nothing from nonstop). The SQL is linted like SQL
files, phase-aware (``nonstop_phase = "contract"`` in the module, docs/migrations-frameworks.md),
and each finding lands on the line of the operation that produced it, with the fix in the
framework's terms (fixes.py). Rendered SQL is cached by a hash of the migration files.

    project.py  which framework a path is, its migration files and settings
    render.py   the renderer subprocess, its output as units, the cache
    lint.py     units -> SQL texts -> findings at the operation's line
    selection.py only new migrations: changed since a git ref, or after a revision
"""

from __future__ import annotations

from pathlib import Path

from nonstop.migrate.frameworks.project import TOOLS, Project, Tool, detect
from nonstop.migrate.frameworks.selection import after_revision, changed_since
from nonstop.migrate.lint import FileResult, LintOptions

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
    from nonstop.migrate.frameworks.lint import lint_units
    from nonstop.migrate.frameworks.render import load, project_python

    units = load(project, project_python(project, python), cache_dir)
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
    return lint_units(units, project.tool, options, selected)
