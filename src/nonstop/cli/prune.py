"""``nonstop prune``: apply ``[retention]`` to ``.nonstop/`` now (the agent also does it after
each rollout). Reads the store directly, so it works with or without a running agent: the
release rows are deleted in one SQLite write transaction that re-reads what is protected
(active, previous, running rollout, live instances), so a deploy committing at the same time
keeps its release."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from nonstop.cli.common import console, json_option, print_json, project_paths
from nonstop.config import load_config
from nonstop.engine.retention import PruneReport, prune, state_dir_size
from nonstop.errors import UsageError
from nonstop.store import open_store


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@json_option
def prune_command(dry_run: bool, as_json: bool) -> None:
    """Remove old release copies and logs as [retention] says (never the active, previous or
    a release in use)."""
    paths = project_paths()
    config = load_config(paths.config)
    if not (paths.state / "state.db").exists():
        raise UsageError(f"{paths.state}: no state yet (nothing was deployed): nothing to prune")
    store = open_store(paths.state)
    try:
        report = prune(store, paths.state, config.retention, dry_run=dry_run)
    finally:
        store.close()
    if as_json:
        print_json({**report.to_dict(), "state_dir_bytes": state_dir_size(paths.state)})
        return
    _print(report, state_dir_size(paths.state))


def _print(report: PruneReport, size: int) -> None:
    verb = "would remove" if report.dry_run else "removed"
    table = Table("release", "kept because")
    for name, why in report.releases_kept.items():
        table.add_row(escape(name), why)
    console.print(table)
    removed = ", ".join(escape(n) for n in report.releases_removed) or "none"
    console.print(f"releases {verb}: {removed}")
    console.print(
        f"logs {verb}: {len(report.logs_removed)}; "
        f"{'would rotate' if report.dry_run else 'rotated'}: {len(report.logs_rotated)}"
    )
    console.print(
        f"{report.bytes_freed / 1e6:.1f} MB {'to free' if report.dry_run else 'freed'}; "
        f".nonstop is {size / 1e6:.1f} MB"
    )
