"""``nonstop verify``: constant-rate load against a URL, for a duration or while a command runs.

    nonstop verify --url http://127.0.0.1:8080/ --rps 300 --duration 30s
    nonstop verify --rps 300 -- nonstop deploy v2

Exit status: 0 every request ok (and the command, if any, exited 0); 1 a request was not ok
(or none was scheduled); 2 bad input; 3 the command failed while every request was ok; 4 both
failed; 130 interrupted. The command's own exit status is printed and is in ``--json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from nonstop.agent.client import AgentClient
from nonstop.cli.common import project_paths
from nonstop.cli.verify_ws import DeathWatch, print_ws_report, ws_url
from nonstop.config.load import CONFIG_FILE, load_config
from nonstop.config.units import format_duration, parse_duration
from nonstop.errors import NonstopError, UsageError
from nonstop.loadgen import LoadGenerator, LoadReport, Outcome
from nonstop.loadgen.options import check_url, parse_expect_status, parse_header
from nonstop.loadgen.websockets import WebSocketHolder, WebSocketReport

EXIT_OK, EXIT_REQUESTS_FAILED, EXIT_COMMAND_FAILED, EXIT_BOTH_FAILED = 0, 1, 3, 4
EXIT_INTERRUPTED = 130


class DurationType(click.ParamType[float]):
    """``30``, ``30s``, ``500ms``, ``2m``; ``positive`` rejects zero."""

    name = "duration"

    def __init__(self, *, positive: bool) -> None:
        self.positive = positive

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if self.positive and seconds <= 0:
            self.fail(f'expected a duration > 0 such as "30s", got "{value}"', param, ctx)
        return seconds


POSITIVE_DURATION = DurationType(positive=True)
DURATION = DurationType(positive=False)


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        if self.exit_code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-self.exit_code).name}"
        return f"exit {self.exit_code}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "exit_code": self.exit_code,
            "status": self.describe(),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class VerifyResult:
    report: LoadReport | None
    command: CommandResult | None
    interrupted: bool
    websockets: WebSocketReport | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        requests_failed = (self.report is not None and not self.report.passed) or (
            self.websockets is not None and not self.websockets.passed
        )
        command_failed = self.command is not None and not self.command.ok
        if requests_failed and command_failed:
            return EXIT_BOTH_FAILED
        if command_failed:
            return EXIT_COMMAND_FAILED
        return EXIT_REQUESTS_FAILED if requests_failed else EXIT_OK

    def verdict(self) -> str:
        if self.interrupted:
            return "INTERRUPTED: the run was stopped before its end; nothing was proven"
        parts = [r.verdict() for r in (self.report, self.websockets) if r is not None]
        text = "; ".join(parts)
        if self.command is not None and not self.command.ok:
            label = "requests " if self.report is not None else ""
            text = f"FAIL: the command failed ({self.command.describe()}); {label}{text}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            **(self.report.to_dict() if self.report is not None else {}),
            "websockets": self.websockets.to_dict() if self.websockets is not None else None,
            "command": self.command.to_dict() if self.command else None,
            "interrupted": self.interrupted,
            "verdict": self.verdict(),
            "exit_code": self.exit_code,
        }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", help="URL to load. Default: http://<router.listen>/ from ./nonstop.toml.")
@click.option(
    "--rps",
    type=float,
    default=100.0,
    show_default=True,
    help="Requests per second, sent on a fixed schedule however slow the answers are.",
)
@click.option("--duration", type=POSITIVE_DURATION, help="How long to run, e.g. 30s (no command).")
@click.option(
    "--timeout", type=POSITIVE_DURATION, default="5s", show_default=True, help="Per request."
)
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Connection pool size: requests in flight at most.",
)
@click.option("--method", default="GET", show_default=True, help="HTTP method.")
@click.option("--header", "headers", multiple=True, help='"Name: value"; repeatable.')
@click.option(
    "--expect-status",
    multiple=True,
    help='Statuses that count as ok, e.g. 200, "200,204", "200-299". Default: 2xx and 3xx.',
)
@click.option(
    "--warmup",
    type=DURATION,
    default="0s",
    show_default=True,
    help="Load before measuring (and before the command starts); not in the verdict.",
)
@click.option(
    "--max-lag",
    type=POSITIVE_DURATION,
    default="1s",
    show_default=True,
    help="A request not sent this long after its scheduled time counts as not_sent.",
)
@click.option(
    "--tail",
    type=DURATION,
    default="0s",
    show_default=True,
    help="Keep the load this long after the command exits.",
)
@click.option("--timeline", is_flag=True, help="Print per-second counts.")
@click.option("--group-by-header", metavar="NAME", help="Count responses by this header's value.")
@click.option(
    "--group-by-body",
    type=click.IntRange(min=1),
    metavar="N",
    help="Count responses by the first N bytes of their body.",
)
@click.option(
    "--websockets",
    type=click.IntRange(min=1),
    metavar="N",
    help="Also hold N WebSocket connections, reconnecting on close (HTTP load only with --rps).",
)
@click.option("--ws-path", default="/ws", show_default=True, help="Path of the WebSocket endpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def verify(
    ctx: click.Context,
    url: str | None,
    rps: float,
    duration: float | None,
    timeout: float,
    connections: int,
    method: str,
    headers: tuple[str, ...],
    expect_status: tuple[str, ...],
    warmup: float,
    max_lag: float,
    tail: float,
    timeline: bool,
    group_by_header: str | None,
    group_by_body: int | None,
    websockets: int | None,
    ws_path: str,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Prove zero downtime: count the outcome of every request sent at a constant rate.

    Runs for --duration, or for as long as the COMMAND after `--` runs:

        nonstop verify --rps 300 -- nonstop deploy v2
    """
    if not rps > 0 or rps == float("inf"):
        raise click.BadParameter(f"expected a number > 0, got {rps:g}", param_hint="'--rps'")
    if command and duration is not None:
        raise UsageError("give either --duration or a command after --, not both")
    if not command and duration is None:
        raise UsageError("give --duration (e.g. --duration 30s) or a command after --")
    target = url if url is not None else default_url()
    check_url(target)
    holder = WebSocketHolder(ws_url(target, ws_path), websockets) if websockets else None
    rps_given = ctx.get_parameter_source("rps") != click.core.ParameterSource.DEFAULT
    generator = (
        None
        if holder is not None and not rps_given
        else LoadGenerator(
            target,
            rps,
            duration=duration,
            timeout=timeout,
            connections=connections,
            method=method.upper(),
            headers=dict(parse_header(h) for h in headers),
            expect_status=parse_expect_status(expect_status),
            warmup=warmup,
            max_lag=max_lag,
            group_by_header=group_by_header,
            group_by_body=group_by_body or 0,
        )
    )
    load = Load(generator, holder, DeathWatch(_agent()), duration=duration, warmup=warmup)
    result = asyncio.run(_run(load, command, tail=tail, child_to_stderr=as_json))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_result(Console(), result, timeline=timeline)
    ctx.exit(result.exit_code)


def default_url(config: Path = Path(CONFIG_FILE)) -> str:
    """``http://<router.listen>/`` from nonstop.toml; a wildcard host becomes loopback."""
    if not config.exists():
        raise UsageError(f"give --url: there is no {config} here to read router.listen from")
    host, _, port = load_config(config).router.listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}.get(host, host)
    return f"http://{host}:{port}/"


def _agent() -> AgentClient | None:
    """The agent of the project here, if any: it tells which instances died during the run."""
    try:
        return AgentClient(project_paths(), timeout=5.0)
    except NonstopError:
        return None


@dataclass
class Load:
    """What verify runs: HTTP requests at a constant rate, WebSocket clients, or both."""

    generator: LoadGenerator | None
    holder: WebSocketHolder | None
    watch: DeathWatch
    duration: float | None
    warmup: float

    async def start(self) -> None:
        await self.watch.begin()
        if self.generator is not None:
            await self.generator.start()
        if self.holder is not None:
            await self.holder.start()

    async def finished(self) -> None:
        if self.generator is not None:
            await self.generator.finished()
        else:
            await asyncio.sleep(self.duration or 0.0)

    async def warmed_up(self) -> None:
        if self.generator is not None:
            await self.generator.warmed_up()
        else:
            await asyncio.sleep(self.warmup)
        if self.holder is not None:  # every client connected (or 10 s): then the command
            await self.holder.wait_connected(timeout=10.0)

    async def close(self) -> None:
        if self.generator is not None:
            await self.generator.close()
        if self.holder is not None:
            await self.holder.stop()

    async def stop(self) -> tuple[LoadReport | None, WebSocketReport | None]:
        report = await self.generator.stop() if self.generator is not None else None
        died = await self.watch.died()
        ws = await self.holder.stop(died) if self.holder is not None else None
        return report, ws


async def _run(
    load: Load, command: tuple[str, ...], *, tail: float, child_to_stderr: bool
) -> VerifyResult:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await load.start()
        try:
            outcome = await _drive(load, command, stop, signals, tail, child_to_stderr)
        except BaseException:
            await load.close()
            raise
        report, ws = await load.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return VerifyResult(report=report, command=outcome, interrupted=bool(signals), websockets=ws)


async def _drive(
    load: Load,
    command: tuple[str, ...],
    stop: asyncio.Event,
    signals: list[int],
    tail: float,
    child_to_stderr: bool,
) -> CommandResult | None:
    """Wait for the end of the run; with a command, run it under (warm) load."""
    if not command:
        await _first(stop.wait(), load.finished())
        return None
    await _first(stop.wait(), load.warmed_up())
    if stop.is_set():
        return None  # interrupted during the warmup: the command never starts
    result = await _run_command(command, stop, signals, child_to_stderr)
    if tail > 0 and not stop.is_set():
        await _first(stop.wait(), asyncio.sleep(tail))
    return result


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait until one of ``aws`` is done; cancel the others."""
    futures = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()


async def _run_command(
    command: tuple[str, ...], stop: asyncio.Event, signals: list[int], child_to_stderr: bool
) -> CommandResult:
    started = time.monotonic()
    try:
        child = await asyncio.create_subprocess_exec(
            *command,
            stdout=2 if child_to_stderr else None,  # fd 2: keep stdout for the JSON
        )
    except FileNotFoundError:
        raise UsageError(f"command not found: {command[0]}") from None
    except PermissionError:
        raise UsageError(f"command is not executable: {command[0]}") from None
    await _first(child.wait(), stop.wait())
    if child.returncode is None and signal.SIGTERM in signals:
        # A terminal's Ctrl-C already reached the command (same process group); a SIGTERM was
        # meant for us alone, so pass it on rather than leave the command running unobserved.
        child.terminate()
    code = await child.wait()
    return CommandResult(argv=command, exit_code=code, seconds=time.monotonic() - started)


def print_result(console: Console, result: VerifyResult, *, timeline: bool) -> None:
    if result.report is not None:
        _print_http(console, result.report, result.command, timeline=timeline)
    elif result.command is not None:
        _print_command(console, result.command)
    if result.websockets is not None:
        print_ws_report(console, result.websockets)
    style = "bold green" if result.exit_code == EXIT_OK else "bold red"
    console.print(f"[{style}]{result.verdict()}[/]")


def _print_command(console: Console, command: CommandResult) -> None:
    style = "green" if command.ok else "red"
    console.print(
        f"command: {shlex.join(command.argv)} -> "
        f"[{style}]{command.describe()}[/] after {command.seconds:.1f}s"
    )


def _print_http(
    console: Console, report: LoadReport, command: CommandResult | None, *, timeline: bool
) -> None:
    settings = report.settings
    console.print(
        f"[bold]{report.method} {report.url}[/] at {report.rps:g} rps for "
        f"{format_duration(report.duration)} (timeout {format_duration(settings['timeout'])}, "
        f"{settings['connections']} connections)"
    )
    if command is not None:
        _print_command(console, command)
    if report.warmup:
        warm = ", ".join(f"{name} {n}" for name, n in report.warmup.items() if n)
        console.print(f"warmup (not counted): {warm or 'nothing scheduled'}")
    console.print(_outcomes_table(report))
    console.print(_latency_table(report))
    extras = {
        "status codes": {str(k): v for k, v in report.status_codes.items()},
        "errors": report.errors,
        "retried (no response byte on the first attempt)": report.retried,
        "groups": report.groups,
    }
    for title, counts in extras.items():
        if counts:
            console.print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if timeline:
        console.print(_timeline_table(report))


def _outcomes_table(report: LoadReport) -> Table:
    table = Table(title=None, show_edge=False)
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for name, n in report.counts.items():
        style = "red" if n and name != Outcome.OK else ""
        table.add_row(str(name), str(n), style=style)
    table.add_row("scheduled", str(report.scheduled), style="bold")
    table.add_row("achieved rps", f"{report.achieved_rps:g}")
    return table


def _latency_table(report: LoadReport) -> Table:
    table = Table(show_edge=False)
    for column in ("latency (ms)", "p50", "p99", "max"):
        table.add_column(column, justify="right" if column != "latency (ms)" else "left")
    for label, p in (
        ("from scheduled", report.latency_scheduled),
        ("from sent", report.latency_sent),
    ):
        table.add_row(label, f"{p.p50:g}", f"{p.p99:g}", f"{p.max:g}")
    return table


def _timeline_table(report: LoadReport) -> Table:
    shown = [o for o in Outcome if o == Outcome.OK or any(s.counts[o] for s in report.timeline)]
    table = Table(show_edge=False)
    table.add_column("second", justify="right")
    for outcome in shown:
        table.add_column(str(outcome), justify="right")
    if report.groups:
        table.add_column("groups")
    for second in report.timeline:
        row = [str(second.second), *(str(second.counts[o]) for o in shown)]
        if report.groups:
            row.append(", ".join(f"{k} {v}" for k, v in second.groups.items()))
        table.add_row(*row, style="red" if second.failed else "")
    return table
