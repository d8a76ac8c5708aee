"""The fleet controller: observe every host, decide (fleet/plan.py), journal, act.

It runs in the process of ``nonstop fleet deploy`` (or ``resume``) on the controller machine.
Each tick it reads every host's agent through SSH (status and latest rollout), the edge's
per-release counts, and any operator command; then ``decide``; then, like the engine, it
commits the new state and the actions as intended *before* running them, and marks them done
after. Killed at any point, ``nonstop fleet resume`` replays what was intended (every action is
idempotent: a host already serving the release, or already moving to it, is left alone) and
carries on from the stored state.

A host that does not answer is observed as unreachable (its connection is dropped and tried
again next tick), never as a failure of the controller: the planner decides what that means.
"""

from __future__ import annotations

import asyncio
import contextlib
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from nonstop.config.fleet import FleetConfig, HostConfig
from nonstop.config.schema import NonstopConfig
from nonstop.errors import NonstopError, StateError, UsageError
from nonstop.fleet.bootstrap import HostLayout, remote_agent
from nonstop.fleet.external import Front
from nonstop.fleet.hostfile import host_settings
from nonstop.fleet.plan import (
    EdgePin,
    FleetAction,
    FleetObserved,
    FleetSpec,
    FleetState,
    FrontHosts,
    HostAbort,
    HostDeploy,
    HostPromote,
    HostView,
    decide,
)
from nonstop.fleet.ssh import HostConnection, HostError, KnownHosts, RemoteAgent, quote
from nonstop.fleet.store import FleetRollout, FleetStore

SKIPPED_NAMES = {".nonstop", ".git", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache"}
FAILED = ("rolled_back", "aborted", "failed")
DEPLOY_CALL = 960.0
"""How long a host's agent may take to accept a deploy: it copies and builds the release first
(the agent gives a build 900 s). The call runs beside the ticks (``FleetController.calls``)."""


def spec_from_dict(data: dict[str, Any]) -> FleetSpec:
    fields = dict(data)
    fields["hosts"] = tuple(fields["hosts"])
    fields["canary"] = tuple(fields.get("canary", ()))
    return FleetSpec(**fields)


def spec_to_dict(spec: FleetSpec) -> dict[str, Any]:
    return asdict(spec)


class HostLink:
    """The controller's connection to one host and its agent, reopened after a failure."""

    def __init__(self, host: HostConfig, known: KnownHosts, timeout: float) -> None:
        self.host = host
        self.known = known
        self.timeout = timeout
        self.connection: HostConnection | None = None
        self.agent: RemoteAgent | None = None
        self.opening = asyncio.Lock()
        """One connection at a time: a deploy call in flight and a tick's reads share it."""

    async def get(self) -> RemoteAgent:
        async with self.opening:
            if self.agent is None:
                connection = await HostConnection.open(self.host, self.known, timeout=self.timeout)
                try:
                    self.agent = await remote_agent(connection)
                except BaseException:
                    await connection.close()
                    raise
                self.connection = connection
            return self.agent

    async def call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        agent = await self.get()
        try:
            return await agent.request(method, path, body, timeout=timeout or self.timeout)
        except HostError:
            await self.drop()
            raise

    async def drop(self) -> None:
        connection, self.connection, self.agent = self.connection, None, None
        if connection is not None:
            connection.abort()  # it failed: nothing to wait for, every forwarded session ends


class FleetController:
    def __init__(
        self,
        project: Path,
        config: NonstopConfig,
        fleet: FleetConfig,
        known: KnownHosts,
        store: FleetStore,
        edge: Front,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.project = project
        self.config = config
        self.fleet = fleet
        self.store = store
        self.edge = edge
        self.say = say
        self.links = {h.name: HostLink(h, known, fleet.connect_timeout) for h in fleet.hosts}
        self.views: dict[str, HostView] = {}
        self.calls: dict[str, asyncio.Task[None]] = {}
        """Host -> its deploy call still in flight (copying the release, the host building it):
        it runs beside the ticks, so the controller keeps observing and deciding meanwhile."""
        self.front_started = False
        """The front is started by :meth:`run` only: what comes before (reading the hosts, a
        refusal) leaves the edge as it was."""
        self.call_errors: dict[str, tuple[str, bool]] = {}
        """Host -> (why its last call for a step failed, whether retrying cannot help), given to
        the planner with the next observation (as the host's ``trouble``, or ``failed``)."""

    async def close(self) -> None:
        for task in self.calls.values():
            task.cancel()
        await asyncio.gather(*self.calls.values(), return_exceptions=True)
        self.calls = {}
        for link in self.links.values():
            await link.drop()

    # -- observing ---------------------------------------------------------------------------

    async def observe_host(self, name: str, spec: FleetSpec, since: float) -> HostView:
        link = self.links[name]
        try:
            status = await link.call("GET", "/v1/status")
            latest = await link.call("GET", "/v1/rollouts?limit=1")
        except NonstopError as exc:
            return HostView(name, False, self.known_active(name), trouble=str(exc))
        return host_view(name, status, latest, spec.candidate, since)

    def known_active(self, name: str) -> str | None:
        view = self.views.get(name)
        return view.active if view else None

    async def observe(
        self, spec: FleetSpec, rollout: FleetRollout, state: FleetState, command: Any
    ) -> FleetObserved:
        names = list(spec.hosts)
        # Which deploy calls are in flight is taken BEFORE reading the hosts: a call that ends
        # while they are read may have started its rollout after its host answered, so that
        # host counts as calling until the next tick reads it afresh.
        calling = self.reap_calls()
        views = await asyncio.gather(
            *(self.observe_host(n, spec, rollout.started_at) for n in names)
        )
        self.views = {
            view.name: with_call_error(view, self.call_errors, calling=view.name in calling)
            for view in views
        }
        self.call_errors = {}
        self.edge.note_releases({v.name: v.active for v in views})
        counts = self.edge.counts_since(state.phase_started_at)
        return FleetObserved(time.time(), self.views, counts, command, self.edge.pinned())

    # -- acting ------------------------------------------------------------------------------

    async def execute(self, spec: FleetSpec, actions: tuple[FleetAction, ...]) -> None:
        """The edge's pin, then the front, then each host's move: a deploy to the candidate
        (its copy and build may take minutes) starts and runs beside the ticks; the others are
        awaited. The pin goes first: an abort pins the stable release before any host moves."""
        for pin in [a for a in actions if isinstance(a, EdgePin)]:
            await self.edge.pin(pin.release)
        moves = [a for a in actions if isinstance(a, HostDeploy | HostPromote | HostAbort)]
        fronts = [a for a in actions if isinstance(a, FrontHosts)]
        for front in fronts[:1]:  # drain first: no host leaves service after it moved
            await self.edge.apply(front.enabled, self.views)
        slow = [a for a in moves if isinstance(a, HostDeploy) and not a.rollback]
        for deploy in slow:
            if deploy.host not in self.calls:  # else the same step is in flight already
                self.calls[deploy.host] = asyncio.create_task(self.act(spec, deploy))
        quick = [a for a in moves if a not in slow]
        results = await asyncio.gather(*(self.act(spec, a) for a in quick), return_exceptions=True)
        for action, result in zip(quick, results, strict=True):
            self.failed_call(action.host, result)

    def failed_call(self, host: str, result: BaseException | None) -> None:
        if isinstance(result, NonstopError):
            self.say(f"{host}: {result}")
            # The agent refusing the request (exit-2 kind: a bad release or config) fails the
            # same way every time; anything else (the link, the agent, a timeout, a conflict
            # with a rollout that just started) may take on a retry.
            self.call_errors[host] = (str(result), isinstance(result, UsageError))
        elif isinstance(result, BaseException):
            raise result

    def reap_calls(self) -> set[str]:
        """The hosts whose deploy call is still in flight; a finished one's error is noted."""
        for host, task in list(self.calls.items()):
            if task.done():
                del self.calls[host]
                self.failed_call(host, None if task.cancelled() else task.exception())
        return set(self.calls)

    async def act(self, spec: FleetSpec, action: FleetAction) -> None:
        if isinstance(action, HostDeploy):
            await self.deploy(spec, action)
        elif isinstance(action, HostPromote):
            await self.command(action.host, "promote")
        elif isinstance(action, HostAbort):
            await self.command(action.host, "abort")

    async def command(self, host: str, command: str) -> None:
        with contextlib.suppress(StateError):  # nothing in progress: already done
            await self.links[host].call("POST", "/v1/command", {"command": command})

    async def deploy(self, spec: FleetSpec, action: HostDeploy) -> None:
        link = self.links[action.host]
        status = await link.call("GET", "/v1/status")
        rollout = status.get("rollout")
        if rollout and rollout.get("candidate") == action.release:
            return  # already moving there
        if rollout:
            await self.command(action.host, "rollback" if action.rollback else "abort")
            return
        if status.get("active_release") == action.release:
            return
        warm = {i["release"] for i in status.get("instances") or [] if i.get("state") == "ready"}
        if status.get("previous_release") == action.release and action.release in warm:
            await link.call("POST", "/v1/rollback")  # a weight change: nothing built or started
            return
        path = await self.ensure_sources(link, action.release)
        body = {
            "release": action.release,
            "path": path,
            "env": {},
            "config": self.host_config(link.host, hold=action.hold),
            "strategy": "bluegreen",
        }
        await link.call("POST", "/v1/deploy", body, timeout=DEPLOY_CALL)

    def host_config(self, host: HostConfig, *, hold: bool) -> dict[str, Any]:
        data = host_settings(self.config, host, self.fleet)
        strategy = dict(data.get("strategy", {}))
        bluegreen = dict(strategy.get("bluegreen", {}))
        bluegreen["auto_promote"] = not hold
        strategy["bluegreen"] = bluegreen
        data["strategy"] = strategy
        watch = dict(data.get("watch", {}))
        # Error rates are judged at the edge, which sees every request of every host; a host's
        # own watch would also count the edge's connection checks and charge a stray router
        # answer to the release it just switched to. The host still checks that its
        # instances stay up (none restarted) for host_watch seconds.
        watch["max_error_rate"] = 1.0
        watch["duration"] = self.fleet.host_watch
        watch["check_duration"] = min(self.fleet.host_watch, watch.get("check_duration", 10.0))
        data["watch"] = watch
        return data

    async def ensure_sources(self, link: HostLink, release: str) -> str:
        """The project's files as ``PATH/sources/RELEASE`` on the host (copied once)."""
        await link.get()
        connection = link.connection
        assert connection is not None
        folder = f"{HostLayout(link.host.path).root}/sources"
        target = f"{folder}/{release}"
        present = await connection.run(quote("test", "-d", target), check=False)
        if present.exit_status == 0:
            return target
        with tempfile.TemporaryDirectory(prefix="nonstop-fleet-") as tmp:
            archive = Path(tmp) / f"{release}.tar.gz"
            pack_project(self.project, archive)
            await connection.run(quote("mkdir", "-p", folder))
            await connection.put(archive, f"{folder}/{release}.tar.gz")
        staging = f"{target}.partial"
        await connection.run(
            f"rm -rf {quote(staging)} && mkdir -p {quote(staging)} && "
            f"tar -xzf {quote(folder + '/' + release + '.tar.gz')} -C {quote(staging)} && "
            f"mv {quote(staging)} {quote(target)} && rm -f {quote(folder + '/' + release)}.tar.gz"
        )
        return target

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, rollout: FleetRollout) -> FleetRollout:
        spec = spec_from_dict(rollout.spec)
        if not self.front_started:
            await self.edge.start()
            self.front_started = True
        for entry, actions in self.store.intended(rollout.id):
            self.say("replaying what was intended before the controller stopped")
            await self.observe(spec, rollout, rollout.state, None)
            await self.execute(spec, actions)
            self.store.done(entry)
        state = rollout.state
        while True:
            command = self.store.take_command(rollout.id)
            observed = await self.observe(spec, rollout, state, command)
            decision = decide(spec, state, observed)
            for event in decision.events:
                self.store.event(rollout.id, event)
                self.say(event)
            if decision.actions or decision.state != state:
                entry = self.store.decide(rollout.id, decision.state, decision.actions)
                await self.execute(spec, decision.actions)
                self.store.done(entry)
            state = decision.state
            if decision.finished:
                finish = decision.finished
                self.store.finish(rollout.id, finish.outcome, finish.reason)
                self.store.event(rollout.id, f"{finish.outcome}: {finish.reason}")
                return FleetRollout(
                    rollout.id,
                    rollout.spec,
                    state,
                    finish.outcome,
                    finish.reason,
                    rollout.started_at,
                )
            await asyncio.sleep(min(decision.wake_in or 0.5, 0.5))


def host_view(
    name: str, status: dict[str, Any], latest: list[dict[str, Any]], candidate: str, since: float
) -> HostView:
    rollout = status.get("rollout")
    router = status.get("router") or {}
    warm = frozenset(
        i["release"] for i in status.get("instances") or [] if i.get("state") == "ready"
    )
    failed = None
    if latest:
        last = latest[0]
        finished = last.get("status") in FAILED and last.get("candidate") == candidate
        if finished and float(last.get("started_at") or 0) >= since:
            failed = str(last.get("reason") or last.get("status"))
    return HostView(
        name,
        reachable=True,
        active=status.get("active_release"),
        rollout=rollout.get("candidate") if rollout else None,
        held=rollout is not None and rollout.get("phase") == "awaiting_promote",
        failed=failed,
        warm=warm,
        slots=bool(router.get("release_slots")),
    )


def with_call_error(
    view: HostView, errors: dict[str, tuple[str, bool]], *, calling: bool = False
) -> HostView:
    """The host as observed, with why the controller's last call for its step failed: its
    ``trouble`` (the reason a retry names), or ``failed`` when retrying cannot help; and
    whether a call for its step is still in flight."""
    if calling:
        view = replace(view, calling=True)
    if view.name not in errors:
        return view
    why, final = errors[view.name]
    if final and view.reachable:
        return replace(view, failed=view.failed or why)
    return replace(view, trouble=view.trouble or why)


def pack_project(project: Path, archive: Path) -> None:
    """The project's files, without nonstop's state, VCS data or virtualenvs."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        return None if any(part in SKIPPED_NAMES for part in parts) else info

    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(project.iterdir()):
            if child.name not in SKIPPED_NAMES:
                tar.add(child, arcname=child.name, filter=keep)
