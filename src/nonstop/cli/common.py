"""Helpers every CLI command shares: the project, the agent client, output."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from nonstop.agent.client import AgentClient
from nonstop.agent.paths import Paths, find_project
from nonstop.cli.term import Console

# A terminal gets rich output at its width; a pipe or a file gets lines as long as they are
# (no hard wrap at 80 columns: grep and friends see whole lines). rich is loaded only for
# what nonstop.cli.term does not draw itself.
console = Console()
err_console = Console(stderr=True)


def project_paths() -> Paths:
    """The project: ``$NONSTOP_PROJECT``, else the nearest directory holding nonstop.toml."""
    explicit = os.environ.get("NONSTOP_PROJECT")
    return Paths(Path(explicit).resolve() if explicit else find_project())


def client() -> AgentClient:
    return AgentClient(project_paths())


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def print_json_line(data: Any) -> None:
    """One JSON document on one line (streams such as ``events --json``: JSON Lines)."""
    click.echo(json.dumps(data, default=str, separators=(",", ":")))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
