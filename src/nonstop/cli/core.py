"""Core commands: init, up, down, deploy, status, history, events, logs and rollout control."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nonstop.agent.paths import Paths
from nonstop.cli.common import (
    client,
    console,
    err_console,
    json_option,
    print_json,
    print_json_line,
    project_paths,
)
from nonstop.cli.progress import follow_rollout
from nonstop.cli.term import Table
from nonstop.errors import AgentUnavailable, StateError, UsageError

if TYPE_CHECKING:
    from nonstop.config.schema import RouterConfig
    from nonstop.drivers.runtime.base import Runtime

# Commands that only talk to the agent (status, history, events, promote...) must start fast:
# nonstop.config (pydantic) and asyncio are imported inside the commands that need them, and
# tests/cli/test_import_budget.py fails when one of them is loaded on those paths again.


@click.command()
@click.option("--force", is_flag=True, help="Overwrite an existing nonstop.toml.")
def init(force: bool) -> None:
    """Write a commented example nonstop.toml in the current directory."""
    from importlib import resources

    target = Path.cwd() / "nonstop.toml"
    if target.exists() and not force:
        raise UsageError(f"{target} exists; use --force to overwrite it")
    target.write_text(resources.files("nonstop.cli").joinpath("example.toml").read_text())
    console.print(f"wrote {target}; edit [app] command, then `nonstop up` and `nonstop deploy v1`")


@click.command()
@click.option("--detach", "-d", is_flag=True, help="Run the agent in the background.")
@click.option("--wait", "wait_s", default=30.0, show_default=True, help="Seconds to wait (-d).")
def up(detach: bool, wait_s: float) -> None:
    """Start the agent: router plus the current release."""
    import asyncio

    from nonstop.config import load_config

    paths = project_paths()
    config = load_config(paths.config)  # bad config: exit 2 here, before anything starts
    agent = client()
    if agent.ping():
        status = agent.call("GET", "/v1/status")
        console.print(f"agent already running (pid {status['agent']['pid']})")
        return
    if not detach:
        from nonstop.agent.daemon import Agent

        console.print(f"agent starting for {paths.project}; router on {config.router.listen}")
        _router_note(config.router)
        asyncio.run(Agent(paths, config).run())
        return
    paths.ensure()
    log_start = paths.agent_log.stat().st_size if paths.agent_log.exists() else 0
    pid = spawn_agent(paths)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if agent.ping():
            status = agent.call("GET", "/v1/status")
            active = status["active_release"] or "none yet (run `nonstop deploy NAME`)"
            console.print(
                f"agent running (pid {pid}); router on {status['router']['listen']}; "
                f"active release: {active}"
            )
            _router_note(config.router)
            problems = [p["why"] for p in status.get("degraded") or []]
            if problems:  # running, but this start failed at something: say what, exit 1
                raise StateError(
                    "the agent runs but is degraded: "
                    + "; ".join(problems)
                    + " (it keeps retrying: `nonstop status` shows it, `nonstop down` stops it)"
                )
            return
        if not _pid_alive(pid):
            break
        time.sleep(0.1)
    if _pid_alive(pid):  # up but never answering: stop it, so nothing of this start lingers
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        stop_by = time.monotonic() + 30
        while _pid_alive(pid) and time.monotonic() < stop_by:
            time.sleep(0.1)
    lines = _log_since(paths, log_start).strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    tail = errors[-3:] or lines[-10:]
    detail = "\n  ".join(tail) if tail else "(no output)"
    raise StateError(f"the agent did not come up; {paths.agent_log}:\n  {detail}")


def _router_note(router: RouterConfig) -> None:
    """What this machine means for the router kind in use, when there is something to say."""
    from nonstop.drivers.router.choice import startup_note

    text = startup_note(router.kind, chosen="kind" in router.model_fields_set)
    if text:
        click.echo(text)


def _log_since(paths: Paths, offset: int) -> str:
    """What the agent wrote to agent.log from ``offset`` on: this start's lines only."""
    try:
        with paths.agent_log.open("rb") as handle:
            handle.seek(offset)
            return handle.read(1024 * 1024).decode(errors="replace")
    except OSError:
        return ""


def spawn_agent(paths: Paths) -> int:
    import subprocess

    paths.ensure()
    with paths.agent_log.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nonstop.agent", str(paths.project)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=paths.project,
        )
    return process.pid


def _process_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited agent whose parent has not
    reaped it yet is gone for us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] != "Z"


def _pid_alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return os.path.exists(f"/proc/{pid}")
    return finished == 0


def _runtime(paths: Paths) -> Runtime:
    """The project's runtime, for sweeping what no agent watches: the configured kind, or the
    local one when the config does not load (``down`` must still clean up then)."""
    from nonstop.config import load_config
    from nonstop.drivers.runtime.registry import RuntimeContext, make_runtime

    try:
        kind = load_config(paths.config).runtime.kind
    except UsageError:
        kind = "local"
    return make_runtime(kind, RuntimeContext(paths.state))


@click.command()
@click.option(
    "--keep", is_flag=True, help="Stop only the agent; instances and router keep serving."
)
def down(keep: bool) -> None:
    """Stop the agent and (unless --keep) every instance and the router."""
    agent = client()
    try:
        status = agent.call("GET", "/v1/status")
    except AgentUnavailable:
        import asyncio

        paths = project_paths()
        stopped = [] if keep else asyncio.run(_stop_leftovers(paths))
        said = "; ".join(stopped) if stopped else "nothing to stop"
        console.print(f"no agent is running for {paths.project}: {said}", markup=False)
        return
    pid = status["agent"]["pid"]
    agent.call("POST", "/v1/shutdown", {"stop_instances": not keep})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _process_running(pid):
        time.sleep(0.1)
    what = "agent stopped" if keep else "agent, instances and router stopped"
    console.print(what)


async def _stop_leftovers(paths: Paths) -> list[str]:
    """With no agent: stop what this state dir left running (instance processes, found by
    their environment; the router, by its pid file and the adoption identity check), and say
    what was stopped."""
    from nonstop.drivers.router.process import stop_leftovers

    said = []
    stopped = await _runtime(paths).sweep_strays([])
    if stopped:
        said.append(f"stopped {len(stopped)} leftover instance process(es)")
    routers = await stop_leftovers(paths.state / "router")
    if routers:
        said.append(f"stopped the leftover router {', '.join(routers)}")
    return said


@click.command()
@click.argument("release")
@click.option(
    "--path",
    "path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory of the release (default: the project directory).",
)
@click.option("--env", "env", multiple=True, metavar="K=V", help="Environment for this release.")
@click.option("--strategy", type=click.Choice(["bluegreen", "rolling", "canary"]), default=None)
@click.option("--no-wait", is_flag=True, help="Return once the rollout has started.")
@json_option
def deploy(
    release: str,
    path: Path | None,
    env: tuple[str, ...],
    strategy: str | None,
    no_wait: bool,
    as_json: bool,
) -> None:
    """Deploy RELEASE with the configured strategy; exit 0 completed, 1 aborted or rolled back."""
    from nonstop.config import load_config, to_wire, validate_release_name

    validate_release_name(release)
    release_env = parse_env(env)
    paths = project_paths()
    config = load_config(paths.config)
    source = (path or paths.project).resolve()
    if not source.is_dir():
        raise UsageError(f"--path: {source} is not a directory")
    body = {
        "release": release,
        "path": str(source),
        "env": release_env,
        "config": to_wire(config),
        "strategy": strategy,
    }
    agent = client()
    row = agent.call("POST", "/v1/deploy", body)
    if no_wait:
        print_json(row) if as_json else console.print(f"rollout {row['id']} started")
        return
    sys.exit(follow_rollout(agent, row["id"], as_json=as_json))


def parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    from nonstop.config import validate_env

    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f'--env: expected K=V, got "{pair}"')
        env[key] = value
    return validate_env(env, "--env")


@click.command()
@json_option
def status(as_json: bool) -> None:
    """Active release, instances, routes and any rollout in progress."""
    data = client().call("GET", "/v1/status")
    if as_json:
        print_json(data)
        return
    agent, router = data["agent"], data["router"]
    console.print(
        f"[bold]{data.get('app', '')}[/] agent pid {agent['pid']} · router {router['kind']} on "
        f"{router['listen']} ({'up' if router['alive'] else '[red]down[/]'})"
    )
    for problem in data.get("degraded") or []:
        since = time.strftime("%H:%M:%S", time.localtime(problem["since"]))
        console.print(f"[red]degraded: {problem['why']}[/] (since {since})")
    console.print(
        f"active release: [bold]{data['active_release'] or '-'}[/]  "
        f"previous: {data['previous_release'] or '-'}  weights: {data['weights'] or 'equal'}"
    )
    table = Table("instance", "release", "role", "state", "address", "pid", "restarts")
    for inst in data["instances"]:
        role = inst.get("role", "web")
        table.add_row(
            inst["id"],
            inst["release"],
            role,
            inst["state"],
            (inst["address"] if role == "web" else None) or "-",
            str(inst["pid"] or "-"),
            str(inst["restarts"]),
        )
    console.print(table)
    state = data.get("state_dir")
    if state:
        console.print(f"state: {state['path']} ({_size(state['bytes'])}; `nonstop prune` frees)")
    if data.get("dashboard"):
        console.print(f"dashboard: {data['dashboard']} (`nonstop dashboard` logs you in)")
    rollout = data["rollout"]
    if rollout:
        console.print(
            f"rollout {rollout['id']}: {rollout['strategy']} {rollout['stable'] or '-'} -> "
            f"{rollout['candidate']} · phase {rollout['phase']} step {rollout['step']}"
        )
        if rollout.get("standing"):
            console.print(f"  {rollout['standing']}", markup=False)


def _size(n: int) -> str:
    """1536 -> "1.5 KiB"; 105 * 2**20 -> "105.0 MiB"."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


@click.command()
@click.option("--limit", default=20, show_default=True)
@json_option
def history(limit: int, as_json: bool) -> None:
    """Past rollouts, newest first."""
    rows = client().call("GET", f"/v1/rollouts?limit={limit}")
    if as_json:
        print_json(rows)
        return
    table = Table("id", "strategy", "from", "to", "status", "started", "took", "reason")
    for row in rows:
        took = (row["finished_at"] or time.time()) - row["started_at"]
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["started_at"]))
        kind = "rollback" if row["rollback"] else row["strategy"]
        table.add_row(
            str(row["id"]),
            kind,
            row["stable"] or "-",
            row["candidate"],
            row["status"],
            started,
            f"{took:.1f}s",
            row["reason"] or "",
        )
    console.print(table)


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events.")
@click.option("--rollout", "rollout_id", type=int, default=None)
@json_option
def events(follow: bool, rollout_id: int | None, as_json: bool) -> None:
    """What the agent did and why."""
    agent, after = client(), 0
    while True:
        query = f"/v1/events?after={after}" + (f"&rollout={rollout_id}" if rollout_id else "")
        batch = agent.call("GET", query)
        for event in batch:
            after = max(after, event["id"])
            if as_json:
                print_json_line(event)
            else:
                print_event(event)
        if not follow:
            return
        time.sleep(0.5)


def print_event(event: dict[str, Any]) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    color = {"error": "red", "warning": "yellow"}.get(event["level"], "default")
    console.print(f"{stamp} [{color}]{event['message']}[/]")


@click.command()
@click.option("--instance", default=None)
@click.option("--release", default=None)
@click.option("--lines", "-n", default=50, show_default=True)
@json_option
def logs(instance: str | None, release: str | None, lines: int, as_json: bool) -> None:
    """Recent output of instances."""
    query = f"/v1/logs?lines={lines}"
    if instance:
        query += f"&instance={instance}"
    if release:
        query += f"&release={release}"
    data = client().call("GET", query)
    if as_json:
        print_json(data)
        return
    for name, text in data.items():
        console.print(f"[bold]== {name}[/]")
        for line in text:
            click.echo(line)


@click.command()
@click.option("--no-wait", is_flag=True)
@json_option
def rollback(no_wait: bool, as_json: bool) -> None:
    """Switch back to the previous release (at once while it is warm)."""
    agent = client()
    row = agent.call("POST", "/v1/rollback")
    if no_wait:
        console.print(f"rollback {row['id']} started")
        return
    sys.exit(follow_rollout(agent, row["id"], as_json=as_json))


def _command(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text)
    @json_option
    def run(as_json: bool) -> None:
        row = client().call("POST", "/v1/command", {"command": name})
        if as_json:
            print_json(row)
        else:
            console.print(f"{name} sent to rollout {row['id']} ({row['candidate']})")

    return run


abort = _command("abort", "Abort the rollout in progress: traffic back to the stable release.")
pause = _command("pause", "Pause the rollout in progress at its current step.")
resume = _command("resume", "Resume a paused rollout.")


@click.command()
@click.option("--full", is_flag=True, help="Skip every remaining step.")
@json_option
def promote(full: bool, as_json: bool) -> None:
    """Move the rollout in progress to its next step."""
    name = "promote_full" if full else "promote"
    row = client().call("POST", "/v1/command", {"command": name})
    if as_json:
        print_json(row)
    else:
        console.print(f"{name.replace('_', ' ')} sent to rollout {row['id']} ({row['candidate']})")


def agent_running() -> bool:
    try:
        client().call("GET", "/v1/status")
    except AgentUnavailable:
        return False
    return True


__all__ = ["err_console"]
