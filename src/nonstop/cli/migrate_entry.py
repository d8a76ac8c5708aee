"""The ``nonstop migrate`` group as the entry point loads it: ``lint`` without the runner.

``nonstop migrate lint`` runs in CI on every pull request, often twice (lint, then annotate),
and with a warm cache its work takes well under 0.1 s; the runner's command module
(nonstop.cli.migrate) imports psycopg, pydantic and rich.progress, which cost more than that
just to load. So this group loads ``lint`` from its own module and the other commands from
nonstop.cli.migrate only when one of them is asked for.
"""

from __future__ import annotations

import click

_RUNNER_COMMANDS = ("complete", "plan", "rollback", "start", "status")


class _MigrateGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(("lint", *_RUNNER_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "lint":
            from nonstop.cli.migrate_lint import lint

            return lint
        from nonstop.cli.migrate import migrate as full

        return full.get_command(ctx, cmd_name)


@click.group(cls=_MigrateGroup)
def migrate() -> None:
    """Expand -> backfill -> contract database migrations on PostgreSQL."""
