"""``nonstop notify test``: send a test notice to every ``[[notify]]`` receiver now."""

from __future__ import annotations

import click


@click.group()
def notify() -> None:
    """Webhook notifications ([[notify]] in nonstop.toml)."""


@notify.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def test(as_json: bool) -> None:
    """Send a test notice to every receiver once (no retries); exit 1 if one failed.

    Secrets and headers given as $VAR are read from this shell's environment."""
    import asyncio
    import time

    from nonstop.cli.common import print_json, project_paths
    from nonstop.config import load_config
    from nonstop.errors import UsageError
    from nonstop.notify import notices
    from nonstop.notify.deliver import Notifier

    config = load_config(project_paths().config)
    if not config.notify:
        raise UsageError("nonstop.toml has no [[notify]] table: nothing to test")
    notifier = Notifier(config.notify, config.app.name, lambda level, message: None)
    results = asyncio.run(notifier.test(notices.test(config.app.name, time.time())))
    if as_json:
        print_json([{"receiver": r, "ok": not why, "error": why or None} for r, why in results])
    else:
        for receiver, why in results:
            click.echo(f"{receiver}: {'failed: ' + why if why else 'ok'}")
    if any(why for _, why in results):
        raise SystemExit(1)
