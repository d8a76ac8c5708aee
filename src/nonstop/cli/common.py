"""Helpers every CLI command shares: the project, the agent client, output."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from nonstop.agent.client import AgentClient
from nonstop.agent.paths import Paths, find_project

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def project_paths() -> Paths:
    """The project: ``$NONSTOP_PROJECT``, else the nearest directory holding nonstop.toml."""
    explicit = os.environ.get("NONSTOP_PROJECT")
    return Paths(Path(explicit).resolve() if explicit else find_project())


def client() -> AgentClient:
    return AgentClient(project_paths())


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
