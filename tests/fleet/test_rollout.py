"""Fleet rollouts on real test hosts: sshd, agents, HAProxy per host, the edge in front."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.conftest import fleet_toml
from fleet.netns import TestFleet, fleet_of
from nonstop.agent.paths import Paths
from nonstop.config import load_config
from nonstop.fleet import run
from nonstop.fleet.bootstrap import bootstrap_host
from nonstop.fleet.edge import Edge
from nonstop.fleet.ssh import HostConnection, KnownHosts, trust
from nonstop.fleet.store import FleetStore
from nonstop.loadgen.generator import LoadGenerator

pytestmark = pytest.mark.slow
SAMPLE_APP = Path(__file__).resolve().parents[2] / "src" / "nonstop" / "demo" / "sampleapp.py"


@dataclass
class Site:
    fleet: TestFleet
    project: Path
    edge: str

    def write(self, version: str, *, error_rate: float = 0.0, extra: str = "") -> None:
        env = f'env = {{ VERSION = "{version}", ERROR_RATE = "{error_rate}" }}\n'
        toml = fleet_toml(self.fleet, extra=f'[fleet]\nbatch_wait = "1s"\n{extra}')
        toml = toml.replace("python3 -m nonstop.demo.sampleapp", "python3 app.py")
        head, _, rest = toml.partition("[router]")
        front = f'[fleet.front]\nlisten = "{self.edge}"\n'
        health = '[health]\ninterval = "0.2s"\n[watch]\nmin_requests = 20\nmax_error_rate = 0.02\n'
        (self.project / "nonstop.toml").write_text(head + env + health + "[router]" + rest + front)

    def fleet_project(self) -> run.FleetProject:
        paths = Paths(self.project)
        config = load_config(paths.config)
        assert config.fleet is not None
        known = KnownHosts(self.project / ".nonstop" / "fleet" / "known_hosts")
        return run.FleetProject(paths, config, config.fleet, known)


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("site")
    with fleet_of(3, workdir / "hosts") as fleet:
        project = workdir / "project"
        project.mkdir()
        shutil.copy(SAMPLE_APP, project / "app.py")
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
    config = project.config
    edge = Edge(project.folder / "edge", project.fleet, config.health.path, 1.0)
    await edge.router.stop()


def say(line: str) -> None:
    print(line)


async def deploy(site: Site, strategy: run.Strategy, release: str) -> run.FleetRollout:
    return await run.deploy(site.fleet_project(), strategy, release, say)


def actives(site: Site) -> dict[str, str | None]:
    async def views() -> dict[str, str | None]:
        project = site.fleet_project()
        store = project.store()
        try:
            async with run.controller(project, store, say) as control:
                spec = run.FleetSpec("rolling", "x", None, tuple(h.name for h in site.fleet.hosts))
                return {
                    name: (await control.observe_host(name, spec, 0)).active for name in spec.hosts
                }
        finally:
            store.close()

    return asyncio.run(views())


async def test_rolling_under_load_through_the_edge_drops_nothing(site: Site) -> None:
    site.write("v1")
    first = await deploy(site, "rolling", "v1")
    assert (first.status, first.reason) == ("completed", "every host serves v1")
    site.write("v2")
    load = LoadGenerator(f"http://{site.edge}/", 100, group_by_header="X-Release")
    await load.start()
    try:
        second = await deploy(site, "rolling", "v2")
    finally:
        report = await load.stop()
    assert second.status == "completed", second.reason
    assert report.failed == 0, (report.counts, report.status_codes, report.errors)
    assert set(report.groups) == {"v1", "v2"}
    events = FleetStore(site.project / ".nonstop" / "fleet" / "fleet.db").events(second.id)
    batches = [message for _, message in events if message.startswith("batch ")]
    assert batches == ["batch host1", "batch host2", "batch host3"]
