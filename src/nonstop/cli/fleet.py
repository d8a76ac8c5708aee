"""``nonstop fleet``: many hosts over SSH (docs/fleet.md).

nonstop fleet trust HOST...         record the host keys the hosts show (first contact)
nonstop fleet bootstrap [HOST...]   install nonstop on hosts and start their agents
nonstop fleet status [HOST...]      one line per host: state, version, release, why
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from nonstop.cli.common import console, json_option, print_json, project_paths
from nonstop.config import load_config
from nonstop.config.fleet import FleetConfig, HostConfig
from nonstop.config.schema import NonstopConfig
from nonstop.errors import NonstopError, StateError, UsageError
from nonstop.fleet.bootstrap import BootstrapReport

if TYPE_CHECKING:
    from nonstop.fleet.run import FleetProject
    from nonstop.fleet.store import FleetRollout
from nonstop.fleet.ssh import HostConnection, HostError, KnownHosts, gather_per_host, require_known


def fleet_project() -> FleetProject:
    from nonstop.fleet.run import FleetProject

    config, fleet_cfg, known = fleet_config()
    return FleetProject(project_paths(), config, fleet_cfg, known)


def fleet_config() -> tuple[NonstopConfig, FleetConfig, KnownHosts]:
    paths = project_paths()
    config = load_config(paths.config)
    if config.fleet is None:
        raise UsageError(
            f"{paths.config} has no [fleet] table: add [[fleet.hosts]] entries (docs/fleet.md)"
        )
    known = Path(config.fleet.known_hosts).expanduser()
    return config, config.fleet, KnownHosts(known if known.is_absolute() else paths.project / known)


def chosen(fleet: FleetConfig, names: tuple[str, ...]) -> list[HostConfig]:
    return require_known(fleet.hosts, names)


@click.group()
def fleet() -> None:
    """Deploy to many hosts over SSH."""


@fleet.command()
@click.argument("hosts", nargs=-1)
def trust(hosts: tuple[str, ...]) -> None:
    """Record the host keys HOSTS show (all hosts when none is named). Compare each printed
    fingerprint with the host's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)."""
    from nonstop.fleet.ssh import trust as trust_host

    _, config, known = fleet_config()

    async def one(host: HostConfig) -> tuple[str, bool]:
        return await trust_host(host, known, config.connect_timeout)

    results = asyncio.run(gather_per_host(chosen(config, hosts), one))
    failed = 0
    for name, result in results.items():
        if isinstance(result, HostError):
            failed += 1
            console.print(f"{name}: [red]{result}[/]")
        else:
            shown, new = result
            console.print(
                f"{name}: {shown} {'recorded in ' + str(known.path) if new else 'already trusted'}"
            )
    if failed:
        raise NonstopError(f"{failed} of {len(results)} hosts could not be trusted")


@fleet.command()
@click.argument("hosts", nargs=-1)
@click.option("--trust-new", is_flag=True, help="Record the key of a host seen for the first time.")
@click.option(
    "--wheels",
    type=click.Path(file_okay=False, path_type=Path),
    help="Use the wheels in this directory (nonstop's and its dependencies') instead of building.",
)
def bootstrap(hosts: tuple[str, ...], trust_new: bool, wheels: Path | None) -> None:
    """Install nonstop on HOSTS (all when none is named) and start their agents."""
    from nonstop.fleet.bootstrap import bootstrap_host, build_wheelhouse, own_wheel

    config, fleet_cfg, known = fleet_config()
    targets = chosen(fleet_cfg, hosts)
    with tempfile.TemporaryDirectory(prefix="nonstop-wheels-") as folder:
        if wheels is not None:
            files = sorted(wheels.glob("*.whl"))
            own_wheel(files)
        else:
            console.print("building the wheels of nonstop and its dependencies...")
            files = build_wheelhouse(Path(folder))

        async def one(host: HostConfig) -> BootstrapReport:
            connection = await HostConnection.open(
                host, known, timeout=fleet_cfg.connect_timeout, trust_new=trust_new
            )
            async with connection:
                return await bootstrap_host(connection, files, config, fleet_cfg)

        results = asyncio.run(gather_per_host(targets, one))
    report_bootstrap(results)


def report_bootstrap(results: dict[str, BootstrapReport | HostError]) -> None:
    failed = 0
    for name, result in results.items():
        if isinstance(result, HostError):
            failed += 1
            console.print(f"{name}: [red]failed[/]: {result}")
        else:
            console.print(
                f"{name}: nonstop {result.installed} installed ({result.copied} wheels copied); "
                f"agent {result.agent}",
                soft_wrap=True,  # one line per host, however long the note on its agent
            )
    if failed:
        raise NonstopError(f"{failed} of {len(results)} hosts failed to bootstrap")


@fleet.command()
@click.argument("hosts", nargs=-1)
@json_option
def status(hosts: tuple[str, ...], as_json: bool) -> None:
    """One line per host: its state (ready, degraded, agent down, not installed, unreachable),
    nonstop's version there, its active release and rollout, and why when it is not ready."""
    from nonstop.fleet.run import edge_pin
    from nonstop.fleet.status import fleet_status, note_retries

    project = fleet_project()
    fleet_cfg, known = project.fleet, project.known
    subset = fleet_cfg.model_copy(update={"hosts": chosen(fleet_cfg, hosts)})
    rows = asyncio.run(fleet_status(subset, known))
    rollout = latest_rollout()
    note_retries(rows, rollout)
    pinned = edge_pin(project)
    if as_json:
        hosts_out = [row.to_dict() for row in rows]
        print_json({"rollout": rollout, "pinned": pinned, "hosts": hosts_out})
        return
    if rollout:
        console.print(rollout_line(rollout))
    if pinned:
        console.print(f"edge: every request goes to {pinned} (pinned)", markup=False)
    for row in rows:
        colour = {"ready": "green", "degraded": "yellow"}.get(row.state, "red")
        detail = ", ".join(
            part
            for part in (
                f"nonstop {row.version}" if row.version else "",
                f"release {row.release or 'none'}" if row.version else "",
                f"rollout {row.rollout}" if row.rollout else "",
                row.router or "",
            )
            if part
        )
        line = f"{row.host} ({row.address}): [{colour}]{row.state}[/]"
        line += f" {detail}" if detail else ""
        line += f" - {row.why}" if row.why else ""
        console.print(line + (f" - {escape(row.retrying)}" if row.retrying else ""))
        for role, summary in row.roles.items():
            console.print(f"  {role}: {summary}", markup=False)


STRATEGIES = ("rolling", "canary", "bluegreen")


@fleet.command()
@click.argument("release")
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    help="Default: [strategy] kind (rolling, canary, bluegreen).",
)
def deploy(release: str, strategy: str | None) -> None:
    """Move every web host to RELEASE (the project's files as they are now), host by host
    (rolling), canary host(s) first (canary), or all at once (bluegreen, in lockstep)."""
    from nonstop.config.validate import validate_release_name
    from nonstop.fleet import run

    validate_release_name(release)
    project = fleet_project()
    kind = strategy or project.config.strategy.kind
    with run.controller_lock(project) as mine:
        if not mine:
            raise StateError("a fleet controller is already running for this project")
        outcome = asyncio.run(run.deploy(project, kind, release, say))  # type: ignore[arg-type]
    finish(outcome)


@fleet.command()
def resume() -> None:
    """Continue the fleet rollout: after the controller stopped (it replays its journal), or
    when it paused for a lost host (it carries on)."""
    from nonstop.fleet import run

    project = fleet_project()
    with run.controller_lock(project) as mine:
        if not mine:
            rollout = run.request(project, "resume")
            console.print(f"resume requested for fleet rollout #{rollout.id}")
            return
        finish(asyncio.run(run.resume(project, say)))


@fleet.command()
def rollback() -> None:
    """Back to the release the fleet served before its last rollout: host by host, each a
    switch to its still-running instances. Refused unless that release is warm on every host."""
    from nonstop.fleet import run

    project = fleet_project()
    with run.controller_lock(project) as mine:
        if not mine:
            raise StateError("a fleet controller is already running for this project")
        finish(asyncio.run(run.rollback(project, say)))


@fleet.command()
def abort() -> None:
    """Stop the fleet rollout: every host back on the release it served before."""
    from nonstop.fleet import run

    rollout = run.request(fleet_project(), "abort")
    console.print(
        f"abort requested for fleet rollout #{rollout.id}: the controller moves every host back "
        "(if none runs, `nonstop fleet resume` does it)"
    )


def say(line: str) -> None:
    console.print(line)


def finish(rollout: FleetRollout) -> None:
    console.print(f"fleet rollout #{rollout.id} {rollout.status}: {rollout.reason}")
    if rollout.status != "completed":
        raise NonstopError(f"the fleet rollout did not complete ({rollout.status})")


def latest_rollout() -> dict[str, Any] | None:
    """The newest fleet rollout in this project's journal (None before the first)."""
    from nonstop.fleet.run import FleetProject

    folder = project_paths().state / "fleet"
    if not (folder / "fleet.db").exists():
        return None
    store = FleetProject.store_at(folder)
    try:
        latest = store.latest()
        return latest.to_dict() if latest else None
    finally:
        store.close()


def rollout_line(rollout: dict[str, Any]) -> str:
    spec, state = rollout["spec"], rollout["state"]
    line = f"fleet rollout #{rollout['id']} to {spec.get('candidate')}: {rollout['status']}"
    if rollout["status"] == "running":
        line += f", {state['phase']}" + (
            f" ({', '.join(state['batch'])})" if state["batch"] else ""
        )
        line += f" - paused: {state['paused']}" if state["paused"] else ""
        if state.get("lost"):
            line += f" - drained, waiting for it to answer: {', '.join(state['lost'])}"
    return line + (f" - {rollout['reason']}" if rollout["reason"] else "")
