"""Entry point of the ``nonstop`` command.

Sub-command groups live in their own modules and are imported only when invoked, so
``nonstop --help`` stays fast and one broken group cannot take the others down.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from nonstop import __version__
from nonstop.errors import NonstopError

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    **{
        name: f"nonstop.cli.core:{name}"
        for name in (
            "init",
            "up",
            "down",
            "deploy",
            "status",
            "history",
            "events",
            "logs",
            "rollback",
            "abort",
            "promote",
            "pause",
            "resume",
        )
    },
    "demo": "nonstop.cli.demo:demo",
    "migrate": "nonstop.cli.migrate_entry:migrate",
    "flags": "nonstop.cli.flags:flags",
    "verify": "nonstop.cli.verify:verify",
    "analysis": "nonstop.cli.analysis:analysis",
    "prune": "nonstop.cli.prune:prune_command",
    "fleet": "nonstop.cli.fleet:fleet",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attr = COMMANDS[cmd_name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                return None
            command = getattr(module, attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nonstop")
def cli() -> None:
    """Deploy web services and workers with zero downtime."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a NonstopError becomes one clear line and its exit code, not a traceback."""
    try:
        result = cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except NonstopError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a defect: still one clear line, the traceback only on request
        if os.environ.get("NONSTOP_DEBUG"):
            traceback.print_exc()
        from nonstop.engine.health import describe

        click.echo(
            f"error: nonstop failed unexpectedly: {describe(exc)} (NONSTOP_DEBUG=1 shows where)",
            err=True,
        )
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
