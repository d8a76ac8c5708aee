"""``nonstop migrate plan | start | complete | rollback | status``: the runner's command line.

The work happens in nonstop.migrate.runner; this module resolves settings (nonstop.toml's
[migrations] table, then the command-line overrides), renders progress and summaries, and
lets nonstop.cli.main turn errors into one line and an exit code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from nonstop.agent.paths import find_project
from nonstop.cli.migrate_lint import lint
from nonstop.config.load import load_config
from nonstop.config.schema import MigrationsConfig
from nonstop.config.units import format_duration, parse_duration
from nonstop.errors import UsageError
from nonstop.migrate import runner
from nonstop.migrate.lint import LintInputError, LintOptions, lint_files
from nonstop.migrate.runner import (
    Applied,
    BackfillStarted,
    BatchDone,
    Event,
    Retrying,
    RunSummary,
    Target,
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@click.group()
def migrate() -> None:
    """Expand -> backfill -> contract database migrations on PostgreSQL."""


migrate.add_command(lint)


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--config",
                "config_path",
                type=click.Path(path_type=Path),
                help="nonstop.toml to read [migrations] from (default: the project's).",
            ),
            click.option(
                "--dir", "directory", type=click.Path(path_type=Path), help="Migrations directory."
            ),
            click.option("--database-url", help="libpq URL, or $VAR to read it from."),
            click.option("--json", "as_json", is_flag=True, help="Print JSON."),
        ]
    ):
        func = option(func)
    return func


def _project(config_path: Path | None) -> tuple[Path, MigrationsConfig]:
    if config_path is not None:
        config = load_config(config_path)
        return config_path.resolve().parent, config.migrations or MigrationsConfig()
    project = Path(os.environ.get("NONSTOP_PROJECT") or find_project()).resolve()
    if (project / "nonstop.toml").is_file():
        config = load_config(project / "nonstop.toml")
        return project, config.migrations or MigrationsConfig()
    return project, MigrationsConfig()


def _target(
    config_path: Path | None, directory: Path | None, database_url: str | None, **more: Any
) -> tuple[Path, Target]:
    project, config = _project(config_path)
    target = runner.resolve(
        config, base_dir=project, database_url=database_url, directory=directory
    )
    return project, dataclasses.replace(target, **more)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- plan ------------------------------------------------------------------------------------


@migrate.command()
@_options
def plan(
    config_path: Path | None, directory: Path | None, database_url: str | None, as_json: bool
) -> None:
    """Show pending migrations per phase, and a summary of the linter's findings."""
    if _framework(config_path, "plan", as_json):
        return
    _, target = _target(config_path, directory, database_url)
    result = runner.plan(target)
    findings = lint_summary(target)
    if as_json:
        _print_json({**result.to_dict(), "lint": findings})
        return
    for phase in ("expand", "backfill", "contract"):
        names = result.pending[phase]
        out.print(f"[bold]{phase}[/] ({len(names)} pending)")
        for name in names:
            out.print(f"  {name}")
    out.print(f"[dim]{len(result.applied)} applied[/]")
    if "problem" in findings:
        out.print(f"[yellow]lint skipped: {findings['problem']}[/]")
    elif findings["errors"] or findings["warnings"]:
        out.print(
            f"[yellow]lint: {findings['errors']} error(s), {findings['warnings']} warning(s)[/] "
            "(details: nonstop migrate lint)"
        )
    else:
        out.print("lint: no findings")


def lint_summary(target: Target) -> dict[str, Any]:
    """Counts of the linter's findings over the migrations directory (pending and applied)."""
    try:
        # The runner applies every statement under its own lock_timeout (SET LOCAL).
        options = LintOptions(pg_version=target.pg_version, assume_lock_timeout=True)
        results = lint_files([target.directory], options)
    except LintInputError as exc:
        return {"problem": str(exc).splitlines()[0]}
    findings = [f for result in results for f in result.findings]
    errors = sum(1 for f in findings if f.severity == "error")
    return {"errors": errors, "warnings": len(findings) - errors}


# -- start / complete / rollback ----------------------------------------------------------------


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="cyan")


class Reporter:
    """Renders the runner's events: one line per migration and retry, a bar per backfill."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if isinstance(event, Retrying):
            then = f"; attempt {event.attempt + 1} in {format_duration(event.delay)}"
            err.print(
                f"[yellow]{event.name}:{event.line}: {event.reason}{then if event.delay else ''}[/]"
            )
        elif isinstance(event, Applied):
            err.print(
                f"[green]{event.phase}[/] {event.name} "
                f"({format_duration(event.duration_s)}, {event.attempts} attempt(s))"
            )
        elif isinstance(event, BackfillStarted):
            self._bar().start()
            assert self.progress is not None
            self.tasks[event.name] = self.progress.add_task(
                f"backfill {event.name}",
                total=max(event.total_estimate, event.resumed_rows) or None,
                completed=event.resumed_rows,
            )
        elif isinstance(event, BatchDone) and self.progress is not None:
            task = self.tasks[event.name]
            total = self.progress.tasks[task].total
            grown = max(total or 0, event.rows_done)
            self.progress.update(task, completed=event.rows_done, total=grown)

    def _bar(self) -> Progress:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
                RowsPerSecond(),
                TimeRemainingColumn(),
                console=err,
            )
        return self.progress

    def close(self) -> None:
        if self.progress is not None:
            for task in self.progress.tasks:
                self.progress.update(task.id, total=task.completed)
            self.progress.stop()


def _render(summary: RunSummary, as_json: bool, nothing: str) -> None:
    if as_json:
        _print_json(summary.to_dict())
        return
    if not summary.applied and not summary.backfills:
        out.print(nothing)
    for b in summary.backfills:
        resumed = f", resumed after {b.resumed_rows:,} rows" if b.resumed_rows else ""
        out.print(
            f"backfill {b.name}: {b.rows:,} rows in {b.batches} batches, "
            f"{b.rows_per_s:,.0f} rows/s, longest batch {format_duration(b.longest_batch_s)}"
            f"{resumed}"
        )


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"--pause: {exc}") from None


@migrate.command()
@_options
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows per backfill batch.")
@click.option("--pause", help='Pause between backfill batches, e.g. "50ms".')
@click.option("--no-backfill", is_flag=True, help="Run the expand migrations only.")
def start(
    config_path: Path | None,
    directory: Path | None,
    database_url: str | None,
    as_json: bool,
    batch_size: int | None,
    pause: str | None,
    no_backfill: bool,
) -> None:
    """Run pending expand migrations, then the backfills (resuming an interrupted one)."""
    if _framework(config_path, "backfill" if not no_backfill else "expand", as_json):
        return
    _, target = _target(
        config_path, directory, database_url, batch_size=batch_size, pause=_duration(pause)
    )
    reporter = Reporter(quiet=as_json)
    try:
        expanded = runner.run_expand(target, on_event=reporter)
        filled = RunSummary() if no_backfill else runner.run_backfill(target, on_event=reporter)
    finally:
        reporter.close()
    _render(RunSummary(expanded.applied, filled.backfills), as_json, "nothing to do: up to date")


@migrate.command()
@_options
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="The agent's state directory (default: .nonstop in the project).",
)
def complete(
    config_path: Path | None,
    directory: Path | None,
    database_url: str | None,
    as_json: bool,
    state_dir: Path | None,
) -> None:
    """Run contract migrations; refused while an instance of an older release is alive.

    With the project's agent running, the agent runs them: it checks the gate and runs the
    contract under its deploy lock, so no release can start in between (decision 0350)."""
    if _framework(config_path, "contract", as_json, state_dir):
        return
    project, target = _target(config_path, directory, database_url)
    state = (state_dir or project / ".nonstop").resolve()
    through_agent = _contract_through_agent(project, state, target)
    if through_agent is not None:
        if as_json:
            _print_json(through_agent)
            return
        for applied in through_agent.get("applied", []):
            err.print(
                f"[green]{applied['phase']}[/] {applied['name']} "
                f"({format_duration(applied['duration_s'])}, {applied['attempts']} attempt(s))"
            )
        if not through_agent.get("applied"):
            out.print("nothing to do: no pending contract migration")
        return
    reporter = Reporter(quiet=as_json)
    summary = runner.run_contract(target, state_dir=state, on_event=reporter)
    _render(summary, as_json, "nothing to do: no pending contract migration")


def _contract_through_agent(project: Path, state: Path, target: Target) -> dict[str, Any] | None:
    """The agent's answer when it runs for this state dir, else None (no agent: run here)."""
    body = {
        "directory": str(target.directory.resolve()),
        "url": target.url,
        "lock_timeout": target.lock_timeout,
        "pg_version": target.pg_version,
    }
    return _ask_agent_to_contract(project, state, body)


def _framework_contract_through_agent(
    project: Path, state: Path, tool: str, url: str
) -> dict[str, Any] | None:
    """Alembic / Django contract migrations through the agent, like SQL ones (decision 0350):
    the agent reads [migrations] from the project's nonstop.toml and runs the framework under
    its deploy lock. None when no agent runs for this state dir."""
    body = {"tool": tool, "project": str(project.resolve()), "url": url}
    return _ask_agent_to_contract(project, state, body)


def _ask_agent_to_contract(
    project: Path, state: Path, body: dict[str, Any]
) -> dict[str, Any] | None:
    from nonstop.agent.client import AgentClient
    from nonstop.agent.paths import Paths
    from nonstop.errors import AgentUnavailable

    paths = Paths(project)
    if state != paths.state.resolve() or paths.read_token() is None:
        return None
    try:
        answer = AgentClient(paths, timeout=3600).call("POST", "/v1/migrate/contract", body)
    except AgentUnavailable:
        return None
    return dict(answer)


@migrate.command()
@_options
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many applied expand migrations to undo, newest first.",
)
def rollback(
    config_path: Path | None,
    directory: Path | None,
    database_url: str | None,
    as_json: bool,
    steps: int,
) -> None:
    """Undo the latest expand migrations with their down SQL (`-- nonstop: down`)."""
    _framework(config_path, "rollback", as_json)
    _, target = _target(config_path, directory, database_url)
    summary = runner.run_rollback(target, steps=steps, on_event=Reporter(quiet=as_json))
    _render(summary, as_json, "nothing rolled back")


def _framework(
    config_path: Path | None, step: str, as_json: bool, state_dir: Path | None = None
) -> bool:
    """[migrations] tool = "alembic" | "django": the framework applies (frameworks/run.py);
    False for SQL files."""
    project, config = _project(config_path)
    if config.tool == "sql":
        return False
    if step in ("status", "rollback"):
        tool = (
            "alembic history / alembic downgrade"
            if config.tool == "alembic"
            else ("manage.py showmigrations / manage.py migrate APP NAME")
        )
        raise UsageError(
            f"migrate {step}: [migrations] tool is {config.tool}, whose own history table is "
            f"the record: use {tool} (and `nonstop migrate plan` for the phases)"
        )
    from nonstop.migrate.frameworks import run

    target = run.resolve(config, project)
    if step == "plan":
        pending = run.pending_migrations(target)
        if as_json:
            _print_json({"tool": config.tool, "pending": [vars(m) for m in pending]})
        for m in [] if as_json else pending:
            out.print(f"[bold]{m.phase}[/] {m.revision}  [dim]{m.file}[/]")
        if not pending and not as_json:
            out.print("nothing pending")
        return True
    if step == "contract":
        state = (state_dir or project / ".nonstop").resolve()
        answer = _framework_contract_through_agent(project, state, config.tool, target.url)
        if answer is not None:
            applied = [str(name) for name in answer.get("applied", [])]
        else:
            applied = run.run_contract(target, state)
    else:
        applied = run.run_step(target, "expand" if step == "expand" else "backfill")
    if as_json:
        _print_json({"tool": config.tool, "applied": applied})
    else:
        for name in applied:
            err.print(f"[green]{config.tool}[/] {name}")
        if not applied:
            out.print("nothing to do: up to date")
    return True


# -- status ----------------------------------------------------------------------------------


@migrate.command()
@_options
def status(
    config_path: Path | None, directory: Path | None, database_url: str | None, as_json: bool
) -> None:
    """List migrations: applied ones with timings, then pending ones."""
    _framework(config_path, "status", as_json)
    _, target = _target(config_path, directory, database_url)
    entries = runner.status(target)
    if as_json:
        _print_json([e.to_dict() for e in entries])
        return
    table = Table("migration", "phase", "status", "finished", "took", "attempts", "rows")
    colors = {"applied": "green", "changed": "red", "running": "yellow", "rolled_back": "dim"}
    for e in entries:
        h = e.history
        finished = _clock(h.finished_at) if h and h.finished_at else ""
        took = format_duration(h.duration_s) if h and h.duration_s is not None else ""
        rows = h.rows if h and h.rows is not None else e.progress_rows
        table.add_row(
            e.name,
            e.phase,
            f"[{colors.get(e.status, 'default')}]{e.status}[/]",
            finished,
            took,
            str(h.attempts) if h else "",
            _rows(rows, e.progress_total),
        )
    out.print(table)


def _rows(rows: int | None, total: int | None) -> str:
    """``1,200`` or, for a running backfill, ``1,200/40,000`` (the table's estimated size)."""
    if rows is None:
        return ""
    return f"{rows:,}/{total:,}" if total else f"{rows:,}"


def _clock(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
