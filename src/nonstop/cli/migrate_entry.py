"""The ``nonstop migrate`` group as the entry point loads it: ``lint`` without the runner.

``nonstop migrate lint`` runs in CI on every pull request, often twice (lint, then annotate),
and with a warm cache its work takes well under 0.1 s; the runner's command module
(nonstop.cli.migrate) imports psycopg, pydantic and rich.progress, which cost more than that
just to load. So this group is a LazyGroup (nonstop.cli.lazy): ``lint`` comes from its own
module, the other commands from nonstop.cli.migrate only when one of them is asked for.
"""

from __future__ import annotations

import click

from nonstop.cli.lazy import LazyGroup, LazyTable

_RUNNER = "nonstop.cli.migrate"

# One line per command: name -> ("module:attribute", short help shown by `nonstop migrate --help`).
COMMANDS: LazyTable = {
    "complete": (f"{_RUNNER}:complete", "Run contract migrations; refused while an instance of an older release is alive."),
    "lint": ("nonstop.cli.migrate_lint:lint", "Lint PostgreSQL migrations (SQL files or directories, an Alembic project's alembic.ini, a Django project or app; default: migrations/) for locks, rewrites and breaking changes, knowing each migration's expand/backfill/contract phase."),
    "plan": (f"{_RUNNER}:plan", "Show pending migrations per phase, and a summary of the linter's findings."),
    "rollback": (f"{_RUNNER}:rollback", "Undo the latest expand migrations with their down SQL (`-- nonstop: down`)."),
    "start": (f"{_RUNNER}:start", "Run pending expand migrations, then the backfills (resuming an interrupted one)."),
    "status": (f"{_RUNNER}:status", "List migrations: applied ones with timings, then pending ones."),
}  # fmt: skip


@click.group(cls=LazyGroup, lazy=COMMANDS)
def migrate() -> None:
    """Expand -> backfill -> contract database migrations on PostgreSQL."""
