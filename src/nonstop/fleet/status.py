"""Per-host state for ``nonstop fleet status``: one row per host, each with a word and a why.

States, from worst to best: ``unreachable`` (no SSH: link down, key refused, host key not
trusted), ``not installed`` (no nonstop in ``PATH/venv``), ``agent down`` (installed, its agent
does not answer), ``degraded`` (the agent answers and reports a problem), ``ready``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from nonstop.config.fleet import FleetConfig, HostConfig
from nonstop.errors import NonstopError
from nonstop.fleet.bootstrap import probe
from nonstop.fleet.ssh import HostConnection, HostError, KnownHosts, RemoteAgent, gather_per_host


@dataclass
class HostStatus:
    host: str
    address: str
    state: str
    why: str = ""
    version: str | None = None
    release: str | None = None
    rollout: str | None = None
    router: str | None = None
    instances: int = 0
    roles: dict[str, str] = field(default_factory=dict)
    """Per role, its instances by release and state (``{"worker": "v2 ready 2"}``)."""
    retrying: str = ""
    """What the running fleet rollout does about this host's step that did not take:
    ``retrying (attempt 2 of 4): <why>`` ("" when nothing)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def host_status(host: HostConfig, known: KnownHosts, timeout: float) -> HostStatus:
    row = HostStatus(host.name, f"{host.address}:{host.port}", "unreachable")
    try:
        connection = await HostConnection.open(host, known, timeout=timeout)
    except HostError as exc:
        row.why = str(exc)
        return row
    async with connection:
        found = await probe(connection)
        row.version = found["version"]
        if not row.version:
            row.state, row.why = "not installed", f"no nonstop in {host.path}/venv"
            return row
        if not found["token"]:
            row.state, row.why = "agent down", "its agent never ran"
            return row
        agent = RemoteAgent(connection, found["socket"], found["token"])
        await fill_from_agent(row, agent)
    return row


async def fill_from_agent(row: HostStatus, agent: RemoteAgent) -> None:
    try:
        status = await agent.request("GET", "/v1/status", timeout=10)
    except NonstopError as exc:
        row.state, row.why = "agent down", str(exc)
        return
    router = status.get("router") or {}
    rollout = status.get("rollout")
    row.release = status.get("active_release")
    row.rollout = f"{rollout['candidate']} {rollout['phase']}" if rollout else None
    row.router = f"{router.get('kind')} {router.get('listen')}" + (
        "" if router.get("alive") else " (down)"
    )
    row.instances = len(status.get("instances") or [])
    row.roles = role_summary(status.get("instances") or [])
    problems = [entry.get("why", "") for entry in status.get("degraded") or []]
    if not router.get("alive"):
        problems.insert(0, "its router is down")
    row.state = "degraded" if problems else "ready"
    row.why = "; ".join(problems)


async def fleet_status(fleet: FleetConfig, known: KnownHosts) -> list[HostStatus]:
    async def one(host: HostConfig) -> HostStatus:
        return await host_status(host, known, fleet.connect_timeout)

    results = await gather_per_host(fleet.hosts, one)
    return [result for result in results.values() if isinstance(result, HostStatus)]


def role_summary(instances: list[dict[str, Any]]) -> dict[str, str]:
    """``{"web": "v2 ready 2, v1 draining 1", "worker": "v2 ready 1"}``: what each role runs."""
    counts = Counter((i.get("role") or "web", i.get("release"), i.get("state")) for i in instances)
    roles: dict[str, list[str]] = {}
    for (role, release, state), count in sorted(counts.items(), key=str):
        roles.setdefault(role, []).append(f"{release} {state} {count}")
    return {role: ", ".join(parts) for role, parts in roles.items()}


def note_retries(rows: list[HostStatus], rollout: dict[str, Any] | None) -> None:
    """Each host the running fleet rollout retries says so (``HostStatus.retrying``)."""
    if not rollout or rollout.get("status") != "running" or rollout["state"].get("paused"):
        return
    notes = retry_notes(rollout["spec"], rollout["state"])
    for row in rows:
        row.retrying = notes.get(row.host, "")


def retry_notes(spec: dict[str, Any], state: dict[str, Any]) -> dict[str, str]:
    """Host -> ``retrying (attempt 2 of 4): why`` for each host of the step not moving yet
    (from the journal's state: ``made`` attempts so far, the next one due)."""
    total = int(spec.get("retries", 0)) + 1
    notes = {}
    for retry in state.get("retries", ()):
        if not retry["reason"]:
            continue  # it took: the host moves
        made = int(retry["made"])
        if made < total:
            notes[retry["host"]] = f"retrying (attempt {made + 1} of {total}): {retry['reason']}"
        else:
            notes[retry["host"]] = f"last attempt ({made} of {total}) made: {retry['reason']}"
    return notes
