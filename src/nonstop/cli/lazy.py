"""Click groups whose sub-commands are imported only when one is run.

A command module may import aiohttp, pydantic, psycopg or rich, each tens of milliseconds to
load; ``nonstop --help`` or ``nonstop status`` would pay for all of them if the group imported
every module up front. A :class:`LazyGroup` instead holds a table, one line per command::

    "status": ("nonstop.cli.core:status", "Active release, instances, routes and ..."),

and imports ``module:attribute`` only for the command that runs (or whose own ``--help`` is
asked). The group's ``--help`` lists the commands with the short help kept in the table, so
listing imports nothing; tests/cli/test_lazy_group.py holds every table entry to the short help
of the command it names, so the table cannot drift from the docstrings.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

LazyTable = Mapping[str, tuple[str, str]]
"""Command name -> ("module:attribute" of a click command, its short help)."""


class LazyGroup(click.Group):
    """A click group whose ``lazy`` table names commands to import on use."""

    def __init__(self, *args: Any, lazy: LazyTable, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        return load(self.lazy[cmd_name][0])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their short help, as click writes them, without importing any."""
        names = [name for name in self.list_commands(ctx) if not self._hidden(ctx, name)]
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, self._short_help(ctx, name, limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _hidden(self, ctx: click.Context, name: str) -> bool:
        if name in self.lazy and name not in self.commands:
            return False
        command = super().get_command(ctx, name)
        return command is None or command.hidden

    def _short_help(self, ctx: click.Context, name: str, limit: int) -> str:
        if name in self.lazy and name not in self.commands:
            # click's own shortening of a help text, on a stand-in that imports nothing
            return click.Command(name, help=self.lazy[name][1]).get_short_help_str(limit)
        command = super().get_command(ctx, name)
        return command.get_short_help_str(limit) if command else ""


def load(target: str) -> click.Command:
    """The click command at ``"module:attribute"``."""
    module_name, _, attr = target.partition(":")
    command = getattr(importlib.import_module(module_name), attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command
