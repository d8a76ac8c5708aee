"""A whole test site: N test hosts bootstrapped with nonstop, a project, and the edge's address.

Shared by tests/fleet/test_rollout.py and benchmarks/bench_fleet.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from fleet.conftest import fleet_toml
from fleet.netns import TestFleet, TestHost, fleet_of, read_cmdline
from nonstop.agent.paths import Paths
from nonstop.config import load_config
from nonstop.fleet import run
from nonstop.fleet.bootstrap import HostLayout, bootstrap_host, start_agent
from nonstop.fleet.edge import Edge
from nonstop.fleet.ssh import HostConnection, KnownHosts, trust
from nonstop.loadgen.generator import LoadGenerator
from nonstop.loadgen.report import LoadReport

T = TypeVar("T")
HOST_WATCH = "2s"
"""Each host's own watch after its switch (10 s by default): what the tests' sample app needs
to show a crash loop, and each batch waits for it, so it is most of a rollout's time."""
WORKER = '[processes.worker]\ncommand = "python3 worker.py"\n'
"""A role without a port, on host1 only (its "worker" role): it moves with host1's release."""
WORKER_PY = "import time\n\nwhile True:\n    time.sleep(3600)\n"
ROUTER = '[router]\nkind = "haproxy"\nfront_health = "/health"\nrelease_slots = true\n'
"""Every host's router answers ``/health`` itself and honours the edge's pin, whatever front
a test writes: a router keeps the settings it started with (a deploy may not change them)."""
SAMPLE_APP = Path(__file__).resolve().parents[2] / "src" / "nonstop" / "demo" / "sampleapp.py"


@dataclass
class Site:
    fleet: TestFleet
    project: Path
    edge: str

    def write(
        self,
        version: str,
        *,
        error_rate: float = 0.0,
        extra: str = "",
        front: str = "",
        build: str = "",
    ) -> None:
        """nonstop.toml for ``version`` of the sample app (``extra`` goes into [fleet],
        ``front`` into [fleet.front]: the edge on this machine by default; ``build`` is
        [app] build). Each host's router answers ``/health`` itself (router.front_health), as
        an external front and the edge's checks of the pinned release need."""
        env = f'env = {{ VERSION = "{version}", ERROR_RATE = "{error_rate}" }}\n'
        env += f'build = "{build}"\n' if build else ""
        fleet = f'[fleet]\nbatch_wait = "1s"\nhost_watch = "{HOST_WATCH}"\n{extra}'
        toml = fleet_toml(self.fleet, extra=fleet)
        toml = toml.replace("python3 -m nonstop.demo.sampleapp", "python3 app.py")
        toml = toml.replace('[router]\nkind = "haproxy"\n', ROUTER)
        toml = toml.replace('name = "host1"\n', 'name = "host1"\nroles = ["web", "worker"]\n')
        head, _, rest = toml.partition("[router]")
        front = front or f'[fleet.front]\nlisten = "{self.edge}"\n'
        health = '[health]\ninterval = "0.2s"\n[watch]\nmin_requests = 20\nmax_error_rate = 0.02\n'
        text = head + env + health + WORKER + "[router]" + rest + front
        (self.project / "nonstop.toml").write_text(text)

    def fleet_project(self) -> run.FleetProject:
        paths = Paths(self.project)
        config = load_config(paths.config)
        assert config.fleet is not None
        known = KnownHosts(self.project / ".nonstop" / "fleet" / "known_hosts")
        return run.FleetProject(paths, config, config.fleet, known)

    async def deploy(self, strategy: run.Strategy, release: str) -> run.FleetRollout:
        return await run.deploy(self.fleet_project(), strategy, release, print)

    async def actives(self) -> dict[str, str | None]:
        """The release each host's agent serves now."""
        project = self.fleet_project()
        store = project.store()
        try:
            async with run.controller(project, store, print) as control:
                names = tuple(h.name for h in self.fleet.hosts)
                spec = run.FleetSpec("rolling", "-", None, names)
                return {n: (await control.observe_host(n, spec, 0)).active for n in names}
        finally:
            store.close()

    async def host_call(self, name: str, method: str, path: str) -> object:
        project = self.fleet_project()
        store = project.store()
        try:
            async with run.controller(project, store, print) as control:
                return await control.links[name].call(method, path)
        finally:
            store.close()

    def holding_build(self, marker: Path) -> str:
        """An [app] build command whose first run (the first to make ``marker``) holds for 120 s,
        keeping that host's deploy call in flight; every later run passes at once."""
        (self.project / "hold.sh").write_text(
            f"mkdir {marker} 2>/dev/null && exec sleep 120\nexit 0\n"
        )
        return "sh hold.sh"

    def running_build(self) -> tuple[TestHost, int] | None:
        """The host whose holding build runs (``sleep 120`` in its namespace), and its pid."""
        for host in self.fleet.hosts:
            for pid in host.pids():
                if read_cmdline(pid).strip() == "sleep 120":
                    return host, pid
        return None

    async def restart_agent(self, name: str) -> None:
        """Start the host's agent again over SSH, as its systemd unit would restart it (the
        test hosts have no systemd)."""
        project = self.fleet_project()
        config = project.fleet.host(name)
        async with await HostConnection.open(config, project.known) as connection:
            await start_agent(connection, HostLayout(config.path), project.config.app.name)


def agent_pid(host: TestHost) -> int:
    return next(p for p in host.pids() if "nonstop.agent" in read_cmdline(p))


async def under_load(
    site: Site, rps: float, work: Awaitable[T], *, front: str | None = None
) -> tuple[T, LoadReport]:
    """``work`` while constant load runs through the edge (or ``front``: host:port); its
    result and the load's report (responses grouped by the release that answered,
    ``X-Release``)."""
    load = LoadGenerator(f"http://{front or site.edge}/", rps, group_by_header="X-Release")
    await load.start()
    try:
        result = await work
    finally:
        report = await load.stop()
    return result, report


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float
    """``time.monotonic()`` just before the request was sent."""
    release: str
    """The release that answered (``X-Release``), or the status code for a failure."""


async def one_by_one(site: Site, done: asyncio.Event) -> list[Answer]:
    """Requests through the edge one after another (each sent once the last one ended) until
    ``done``: in the order users would see them, which release answered."""
    answers: list[Answer] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not done.is_set():
            sent = time.monotonic()
            try:
                async with session.get(f"http://{site.edge}/") as response:
                    await response.read()
                    ok = response.status == 200
                    release = response.headers.get("X-Release", "") if ok else str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                release = type(exc).__name__
            answers.append(Answer(sent, release))
    return answers


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def site_of(count: int, workdir: Path, wheelhouse: Path) -> Iterator[Site]:
    """``count`` bootstrapped test hosts and a project; everything stopped after."""
    with fleet_of(count, workdir / "hosts") as fleet:
        project = workdir / "project"
        project.mkdir()
        shutil.copy(SAMPLE_APP, project / "app.py")
        (project / "worker.py").write_text(WORKER_PY)
        here = Site(fleet, project, f"{fleet.gateway}:{free_port(fleet.gateway)}")
        here.write("v0")
        try:
            asyncio.run(bootstrap_all(here, wheelhouse))
            yield here
        finally:
            asyncio.run(stop_edge(here))


async def bootstrap_all(site: Site, wheelhouse: Path) -> None:
    project = site.fleet_project()
    wheels = sorted(wheelhouse.glob("*.whl"))

    async def one(name: str) -> None:
        host = project.fleet.host(name)
        await trust(host, project.known, 10)
        async with await HostConnection.open(host, project.known) as connection:
            await bootstrap_host(connection, wheels, project.config, project.fleet)

    await asyncio.gather(*(one(h.name) for h in site.fleet.hosts))


async def stop_edge(site: Site) -> None:
    project = site.fleet_project()
    if (project.folder / "edge").exists():
        await Edge(project.folder / "edge", project.fleet, 1.0).router.stop()
