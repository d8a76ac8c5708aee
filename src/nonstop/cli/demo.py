"""``nonstop demo``."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--rps", default=200.0, show_default=True, help="Load during the deploys.")
@click.option("--keep", is_flag=True, help="Keep the temporary project directory.")
def demo(rps: float, keep: bool) -> None:
    """Deploy v1, blue-green to v2 and roll back, under load, on a bundled sample app."""
    from nonstop.demo.run import main

    sys.exit(main(rps=rps, keep=keep))
