"""Fleet rollouts on real test hosts: sshd, agents, HAProxy per host, the edge in front."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
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
    edge = Edge(project.folder / "edge", project.fleet, 1.0)
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


async def host_rollouts(site: Site, name: str) -> list[dict[str, object]]:
    project = site.fleet_project()
    store = project.store()
    try:
        async with run.controller(project, store, say) as control:
            rows: list[dict[str, object]] = await control.links[name].call(
                "GET", "/v1/rollouts?limit=50"
            )
            return rows
    finally:
        store.close()


async def test_a_bad_canary_host_rolls_back_and_the_others_never_run_it(site: Site) -> None:
    site.write("v3", error_rate=0.05, extra='canary = ["host1"]\nanalysis_duration = "30s"\n')
    load = LoadGenerator(f"http://{site.edge}/", 100, group_by_header="X-Release")
    await load.start()
    try:
        outcome = await deploy(site, "canary", "v3")
    finally:
        report = await load.stop()
    assert outcome.status == "rolled_back"
    assert outcome.reason.startswith("canary analysis failed: ")
    assert report.failed < 30, report.counts
    assert set(report.groups) == {"v2", "v3"}
    for name in ("host2", "host3"):
        assert all(row["candidate"] != "v3" for row in await host_rollouts(site, name))
    site.write("v2")
    assert set(actives(site).values()) == {"v2"}


def cli(site: Site, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NONSTOP_PROJECT": str(site.project)}
    argv = [sys.executable, "-m", "nonstop.cli", "fleet", *args]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_a_controller_killed_mid_rollout_resumes_from_its_journal(site: Site) -> None:
    site.write("v4")
    controller = cli(site, "deploy", "v4", "--strategy", "rolling")
    store = FleetStore(site.project / ".nonstop" / "fleet" / "fleet.db")
    deadline = time.monotonic() + 120
    while True:  # wait for the second batch to be decided, then kill the controller
        running = store.running()
        if (
            running is not None
            and running.spec["candidate"] == "v4"
            and "host1" in running.state.done
        ):
            break
        assert controller.poll() is None, controller.stdout.read() if controller.stdout else ""
        assert time.monotonic() < deadline, "the rollout never reached its second batch"
        time.sleep(0.05)
    controller.kill()
    controller.wait()
    assert store.running() is not None
    resumed = cli(site, "resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "completed: every host serves v4" in output
    assert set(actives(site).values()) == {"v4"}
    store.close()
