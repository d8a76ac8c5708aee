"""Starting and resuming fleet rollouts: what ``nonstop fleet deploy | resume | abort`` do.

One controller at a time: it holds ``.nonstop/fleet/controller.lock`` (flock) for as long as it
runs. A second ``resume`` while one runs only sends the command; after a crash the lock is free
and ``resume`` takes over from the journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from nonstop.agent.paths import Paths
from nonstop.config.fleet import FleetConfig, switches_at_edge
from nonstop.config.schema import NonstopConfig
from nonstop.errors import StateError, UsageError
from nonstop.fleet.controller import FleetController, spec_to_dict
from nonstop.fleet.edge import Edge
from nonstop.fleet.external import ExternalFront, Front
from nonstop.fleet.plan import FleetSpec, HostView, rollback_problem, start
from nonstop.fleet.ssh import KnownHosts
from nonstop.fleet.store import FleetRollout, FleetStore, already_running

Strategy = Literal["rolling", "canary", "bluegreen"]


@dataclass(frozen=True, slots=True)
class FleetProject:
    paths: Paths
    config: NonstopConfig
    fleet: FleetConfig
    known: KnownHosts

    @property
    def folder(self) -> Path:
        return self.paths.state / "fleet"

    def store(self) -> FleetStore:
        return self.store_at(self.folder)

    @staticmethod
    def store_at(folder: Path) -> FleetStore:
        return FleetStore(folder / "fleet.db")


@contextlib.contextmanager
def controller_lock(project: FleetProject) -> Iterator[bool]:
    """True when this process now is the controller; False when another one runs."""
    project.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(project.folder / "controller.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def controller(
    project: FleetProject,
    store: FleetStore,
    say: Callable[[str], None],
    *,
    pins: bool | None = None,
) -> AsyncIterator[FleetController]:
    """A controller with the front ready (``pins``: whether the edge pins releases; default
    from the config, a resumed rollout's from its stored spec)."""
    config = project.config
    if pins is None:
        pins = switches_at_edge(project.fleet, config.router.kind)

    async def call(host: str, method: str, path: str, body: Any) -> Any:
        return await control.links[host].call(method, path, body)

    edge: Front
    if project.fleet.front.kind == "external":
        edge = ExternalFront(project.fleet, call, say)
    else:
        edge = Edge(project.folder / "edge", project.fleet, config.app.drain_timeout, pins=pins)
    control = FleetController(
        project.paths.project, config, project.fleet, project.known, store, edge, say
    )
    try:
        yield control
    finally:
        await control.close()
        if control.front_started:
            await edge.close()


def edge_pin(project: FleetProject) -> str | None:
    """The release the edge stamps on every request now (None: no pin, or no edge switch)."""
    front = project.fleet.front
    if front.on != "controller" or not switches_at_edge(project.fleet, project.config.router.kind):
        return None
    drain = project.config.app.drain_timeout
    return Edge(project.folder / "edge", project.fleet, drain, pins=True).pinned()


def check_pins(spec: FleetSpec, views: list[HostView]) -> None:
    """UsageError, before the edge changes anything, when the edge would pin releases but a
    host's router cannot honour a pin (its agent started without ``router.release_slots``: a
    host bootstrapped by an older nonstop); its deploy would be refused anyway."""
    lacking = [v.name for v in views if v.reachable and not v.slots]
    if spec.edge_switch and lacking:
        raise UsageError(
            f"fleet.front.switch: {', '.join(lacking)} cannot follow the edge's pin (its router "
            "runs without router.release_slots, started by an older nonstop or another config): "
            'run `nonstop fleet bootstrap` for it again, or set switch = "hosts" (docs/fleet.md)'
        )


def stable_release(views: list[HostView]) -> str | None:
    """The release every host serves now; StateError when a host is away or they differ."""
    away = [v.name for v in views if not v.reachable]
    if away:
        raise StateError(
            f"{', '.join(away)} unreachable: a fleet rollout starts with every host answering "
            "(`nonstop fleet status` says why)"
        )
    serving = {v.active for v in views}
    if len(serving) > 1:
        detail = ", ".join(f"{v.name} {v.active or 'none'}" for v in views)
        raise StateError(f"the hosts serve different releases ({detail}): deploy one to all")
    return serving.pop()


def make_spec(
    project: FleetProject, strategy: Strategy, release: str, stable: str | None
) -> FleetSpec:
    fleet, config = project.fleet, project.config
    hosts = [h.name for h in fleet.web_hosts]
    canary = tuple(fleet.canary_hosts) if strategy == "canary" else ()
    ordered = [h for h in hosts if h in canary] + [h for h in hosts if h not in canary]
    return FleetSpec(
        strategy,
        release,
        stable,
        tuple(ordered),
        canary,
        max_unavailable=fleet.max_unavailable,
        batch_wait=fleet.batch_wait,
        on_host_lost=fleet.on_host_lost,
        max_error_rate=config.watch.max_error_rate,
        min_requests=config.watch.min_requests,
        analysis_duration=fleet.analysis_duration,
        deadline=config.strategy.progress_deadline,
        retries=fleet.retries,
        retry_backoff=fleet.retry_backoff,
        edge_switch=switches_at_edge(fleet, config.router.kind),
    )


async def deploy(
    project: FleetProject, strategy: Strategy, release: str, say: Callable[[str], None]
) -> FleetRollout:
    store = project.store()
    try:
        running = store.running()
        if running is not None:
            raise StateError(already_running(running))
        if strategy == "canary" and project.fleet.front.kind == "external":
            raise UsageError(
                "fleet deploy --strategy canary: the canary analysis counts requests at the edge, "
                'and an external load balancer (fleet.front.kind = "external") reports none here; '
                "use rolling or bluegreen, or an edge router in front (docs/fleet.md)"
            )
        async with controller(project, store, say) as control:
            names = [h.name for h in project.fleet.web_hosts]
            probe = FleetSpec(strategy, release, None, tuple(names))
            views = [await control.observe_host(n, probe, time.time()) for n in names]
            spec = make_spec(project, strategy, release, stable_release(views))
            check_pins(spec, views)
            control.views = {v.name: v for v in views}
            rollout = store.start(spec_to_dict(spec), start(spec, time.time()))
            say(
                f"fleet rollout #{rollout.id}: {spec.stable or 'nothing'} -> {release} ({strategy})"
            )
            return await control.run(rollout)
    finally:
        store.close()


async def rollback(project: FleetProject, say: Callable[[str], None]) -> FleetRollout:
    """Back to the release the fleet served before its last completed rollout, host by host,
    each a switch to instances still running there; refused unless it is warm on every host.
    With the edge switch, the edge pins it first: every user is back at once, the hosts
    follow."""
    store = project.store()
    try:
        if (running := store.running()) is not None:
            raise StateError(already_running(running))
        target = previous_release(store)
        async with controller(project, store, say) as control:
            names = [h.name for h in project.fleet.web_hosts]
            probe = FleetSpec("rolling", target, None, tuple(names))
            views = [await control.observe_host(n, probe, time.time()) for n in names]
            problem = rollback_problem(target, views)
            if problem:
                raise StateError(problem)
            spec = replace(
                make_spec(project, "rolling", target, stable_release(views)),
                batch_wait=0,
                rollback=True,
            )
            check_pins(spec, views)
            control.views = {v.name: v for v in views}
            rollout = store.start(spec_to_dict(spec), start(spec, time.time()))
            say(f"fleet rollback #{rollout.id}: {spec.stable} -> {target}")
            return await control.run(rollout)
    finally:
        store.close()


def previous_release(store: FleetStore) -> str:
    last = store.latest()
    if last is None or last.status != "completed" or not last.spec.get("stable"):
        raise StateError("no previous fleet release to roll back to (no completed fleet rollout)")
    return str(last.spec["stable"])


async def resume(project: FleetProject, say: Callable[[str], None]) -> FleetRollout:
    store = project.store()
    try:
        rollout = store.running()
        if rollout is None:
            raise StateError("no fleet rollout is running: nothing to resume")
        store.command(rollout.id, "resume")
        say(f"resuming fleet rollout #{rollout.id} to {rollout.spec['candidate']}")
        # The rollout goes on as it started: its stored spec says whether the edge pins, even
        # if fleet.front.switch changed since (its pins may still need undoing).
        pins = bool(rollout.spec.get("edge_switch"))
        async with controller(project, store, say, pins=pins) as control:
            return await control.run(rollout)
    finally:
        store.close()


def request(project: FleetProject, command: Literal["abort", "resume"]) -> FleetRollout:
    """Queue ``command`` for the running controller."""
    store = project.store()
    try:
        rollout = store.running()
        if rollout is None:
            raise StateError(f"no fleet rollout is running: nothing to {command}")
        store.command(rollout.id, command)
        return rollout
    finally:
        store.close()
