"""The ``nonstop`` command's click group (the program starts in nonstop.cli.main).

Sub-commands live in their own modules and are imported only when invoked (nonstop.cli.lazy),
so ``nonstop --help`` and ``nonstop status`` do not load what other commands need.
"""

from __future__ import annotations

import os
import sys

import click

from nonstop import __version__
from nonstop.cli.lazy import LazyGroup, LazyTable
from nonstop.errors import NonstopError

_CORE = "nonstop.cli.core"

# One line per command: name -> ("module:attribute", short help shown by `nonstop --help`).
# The short help is the first sentence of the command's docstring (a test holds them equal).
COMMANDS: LazyTable = {
    "abort": (f"{_CORE}:abort", "Abort the rollout in progress: traffic back to the stable release."),
    "analysis": ("nonstop.cli.analysis:analysis", "Look into rollout analysis."),
    "dashboard": ("nonstop.cli.dashboard:dashboard", "Print a one-time login link to the web dashboard ([dashboard] listen)."),
    "demo": ("nonstop.cli.demo:demo", "Deploy v1, blue-green to v2 and roll back, under load, on a bundled sample app."),
    "deploy": (f"{_CORE}:deploy", "Deploy RELEASE with the configured strategy; exit 0 completed, 1 aborted or rolled back."),
    "doctor": ("nonstop.cli.doctor:doctor", "Check this host for the agent: router, ports, kernel, limits, disk."),
    "down": (f"{_CORE}:down", "Stop the agent and (unless --keep) every instance and the router."),
    "events": (f"{_CORE}:events", "What the agent did and why."),
    "fleet": ("nonstop.cli.fleet:fleet", "Deploy to many hosts over SSH."),
    "flags": ("nonstop.cli.flags:flags", "Feature flags: create, roll out, kill; served to Unleash SDKs on [flags] listen."),
    "history": (f"{_CORE}:history", "Past rollouts, newest first."),
    "init": (f"{_CORE}:init", "Write a commented example nonstop.toml in the current directory."),
    "logs": (f"{_CORE}:logs", "Recent output of instances."),
    "migrate": ("nonstop.cli.migrate_entry:migrate", "Expand -> backfill -> contract database migrations on PostgreSQL."),
    "notify": ("nonstop.cli.notify:notify", "Webhook notifications ([[notify]] in nonstop.toml)."),
    "pause": (f"{_CORE}:pause", "Pause the rollout in progress at its current step."),
    "promote": (f"{_CORE}:promote", "Move the rollout in progress to its next step."),
    "prune": ("nonstop.cli.prune:prune_command", "Remove old release copies and logs as [retention] says (never the active, previous or a release in use)."),
    "resume": (f"{_CORE}:resume", "Resume a paused rollout."),
    "rollback": (f"{_CORE}:rollback", "Switch back to the previous release (at once while it is warm)."),
    "service": ("nonstop.cli.service:service", "Run the agent as a systemd service."),
    "status": (f"{_CORE}:status", "Active release, instances, routes and any rollout in progress."),
    "up": (f"{_CORE}:up", "Start the agent: router plus the current release."),
    "verify": ("nonstop.cli.verify:verify", "Prove zero downtime: count the outcome of every request sent at a constant rate."),
}  # fmt: skip


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nonstop")
def cli() -> None:
    """Deploy web services and workers with zero downtime."""


def run(argv: list[str] | None) -> None:
    """Run the click CLI on ``argv`` (None: the program's arguments) and exit with its code;
    a NonstopError becomes one clear line and its exit code, not a traceback."""
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
            import traceback  # only here: tokenize and linecache cost every command ~3 ms

            traceback.print_exc()
        from nonstop.engine.health import describe

        click.echo(
            f"error: nonstop failed unexpectedly: {describe(exc)} (NONSTOP_DEBUG=1 shows where)",
            err=True,
        )
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
