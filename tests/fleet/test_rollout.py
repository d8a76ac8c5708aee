"""Fleet rollouts on real test hosts: sshd, agents, HAProxy per host, the edge in front."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.lb import DETECTION, load_balancer
from fleet.netns import read_cmdline
from fleet.site import Site, agent_pid, one_by_one, site_of, under_load
from nonstop.drivers.router.haproxy_config import LIVE_KEY, parse_map
from nonstop.errors import NonstopError
from nonstop.fleet import run
from nonstop.fleet.bootstrap import HostLayout, start_agent
from nonstop.fleet.edge import Edge
from nonstop.fleet.plan import FleetState
from nonstop.fleet.status import role_summary
from nonstop.fleet.store import FleetStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[Site]:
    with site_of(3, tmp_path_factory.mktemp("site"), wheelhouse) as here:
        yield here


async def test_rolling_under_load_through_the_edge_drops_nothing(site: Site) -> None:
    site.write("v1")
    first = await site.deploy("rolling", "v1")
    assert (first.status, first.reason) == ("completed", "every host serves v1")
    site.write("v2")
    second, report = await under_load(site, 100, site.deploy("rolling", "v2"))
    assert second.status == "completed", second.reason
    assert report.failed == 0, (report.counts, report.status_codes, report.errors)
    assert set(report.groups) == {"v1", "v2"}
    events = FleetStore(site.project / ".nonstop" / "fleet" / "fleet.db").events(second.id)
    batches = [message for _, message in events if message.startswith("batch ")]
    assert batches == ["batch host1", "batch host2", "batch host3"]
    workers = {}
    for name in ("host1", "host2"):
        status = await site.host_call(name, "GET", "/v1/status")
        assert isinstance(status, dict)
        workers[name] = role_summary(status["instances"]).get("worker", "")
    # The worker moved with host1's release; host2 has the web role only.
    assert "v2 ready 1" in workers["host1"], workers
    assert "v1 ready" not in workers["host1"], workers
    assert workers["host2"] == ""


async def test_fleet_rollback_switches_every_host_back_to_its_warm_release(site: Site) -> None:
    outcome, report = await under_load(site, 50, run.rollback(site.fleet_project(), print))
    assert (outcome.status, outcome.reason) == ("completed", "every host serves v1")
    assert report.failed == 0, report.counts
    assert set((await site.actives()).values()) == {"v1"}


async def test_a_bad_canary_host_rolls_back_and_the_others_never_run_it(site: Site) -> None:
    site.write("v3", error_rate=0.05, extra='canary = ["host1"]\nanalysis_duration = "30s"\n')
    outcome, report = await under_load(site, 100, site.deploy("canary", "v3"))
    assert outcome.status == "rolled_back"
    assert outcome.reason.startswith("canary analysis failed: ")
    assert report.failed < 30, report.counts
    assert set(report.groups) == {"v1", "v3"}
    for name in ("host2", "host3"):
        rows = await site.host_call(name, "GET", "/v1/rollouts?limit=50")
        assert isinstance(rows, list)
        assert all(row["candidate"] != "v3" for row in rows)
    assert set((await site.actives()).values()) == {"v1"}


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
    controller.communicate()
    assert store.running() is not None
    resumed = cli(site, "resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "completed: every host serves v4" in output
    assert set(asyncio.run(site.actives()).values()) == {"v4"}
    store.close()


async def wait_for_state(
    store: FleetStore, check: Callable[[FleetState], bool], what: str, deadline: float
) -> None:
    """Poll the journal until the running rollout's state satisfies ``check``."""
    while True:
        running = store.running()
        if running is not None and check(running.state):
            return
        assert time.monotonic() < deadline, f"the rollout never reached: {what}"
        await asyncio.sleep(0.05)


async def watch_pin(edge: Edge, release: str, done: asyncio.Event) -> float | None:
    """``time.monotonic()`` when the edge's HAProxy was first seen stamping ``release`` (asked
    through its runtime API: the saved file is written before HAProxy is told). None: never."""
    line = f"show map {edge.router.release_map}"
    while not done.is_set():
        with contextlib.suppress(NonstopError):  # between two edges, or not started yet
            if parse_map(await edge.router.command(line)).get(LIVE_KEY) == release:
                return time.monotonic()
        await asyncio.sleep(0.01)
    return None


async def test_bluegreen_switches_every_host_in_one_change_at_the_edge(site: Site) -> None:
    """Every host holds v5 ready, then ONE pin at the edge moves every user: a user's requests
    sent after it are all answered by v5, on every host, although the hosts' own tables still
    say v4 until their promote a tick later (decision 0581)."""
    site.write("v5")
    project = site.fleet_project()
    edge = Edge(project.folder / "edge", project.fleet, 1.0, pins=True)
    done = asyncio.Event()
    sequence = asyncio.create_task(one_by_one(site, done))
    pinned = asyncio.create_task(watch_pin(edge, "v5", done))
    try:
        outcome, report = await under_load(site, 100, site.deploy("bluegreen", "v5"))
    finally:
        done.set()
    answers, pinned_at = await sequence, await pinned
    assert (outcome.status, outcome.reason) == ("completed", "every host serves v5")
    assert report.failed == 0, (report.counts, report.status_codes)
    events = [m for _, m in FleetStore(project.folder / "fleet.db").events(outcome.id)]
    assert events[:4] == [
        "every host starts v5",
        "every host holds it ready: switching all at the edge",
        "promoting every host",
        "completed: every host serves v5",
    ], events
    assert pinned_at is not None
    before = [a.release for a in answers if a.sent < pinned_at]
    after = [a.release for a in answers if a.sent > pinned_at]
    assert "v4" in before
    assert after
    assert set(after) == {"v5"}, after  # never v4 again, from any host
    assert set((await site.actives()).values()) == {"v5"}
    assert edge.pinned() == "v5"  # the pin stays: it names what the fleet serves


async def test_an_external_load_balancer_is_drained_through_each_hosts_health_path(
    site: Site, tmp_path: Path
) -> None:
    """A HAProxy configured by the test (not by nonstop) checks /health on every host's router;
    rolling host by host, each is drained there (503) before it moves and put back after."""
    front = f'[fleet.front]\nkind = "external"\ndrain_wait = "{DETECTION}"\n'
    site.write("v6", front=front)
    with load_balancer(site, tmp_path / "lb") as balancer:
        await balancer.wait_all_up(time.monotonic() + 60)
        before = await balancer.transitions()
        outcome, report = await under_load(
            site, 100, site.deploy("rolling", "v6"), front=balancer.listen
        )
        after = await balancer.transitions()
        await balancer.wait_all_up(time.monotonic() + 60)
    assert (outcome.status, outcome.reason) == ("completed", "every host serves v6")
    assert report.failed == 0, (report.counts, report.status_codes, report.errors)
    assert set(report.groups) == {"v5", "v6"}
    assert {name: after[name] - before[name] for name in after} == {
        "host1": 1,
        "host2": 1,
        "host3": 1,
    }
    for host in site.fleet.hosts:
        status = await site.host_call(host.name, "GET", "/v1/status")
        assert isinstance(status, dict)
        assert status["front"] == "serving"


async def test_a_host_cut_mid_rollout_pauses_and_abort_leaves_no_mixed_version(site: Site) -> None:
    site.write("v7", extra="retries = 0\n")  # pause at once (retries: test_plan.py, below)
    project = site.fleet_project()
    task = asyncio.create_task(site.deploy("rolling", "v7"))
    store = project.store()
    host2 = site.fleet.hosts[1]
    try:
        deadline = time.monotonic() + 180
        await wait_for_state(store, lambda s: s.batch == ("host2",), "batch host2", deadline)
        host2.cut()
        paused = "host2 is unreachable: paused"
        await wait_for_state(store, lambda s: paused in s.paused, paused, deadline)
        run.request(project, "abort")
        await wait_for_state(store, lambda s: s.lost == ("host2",), "host2 lost", deadline)
        weights = edge_weights(site)
        assert weights == {"host1": 1, "host2": 0, "host3": 1}
        status = cli(site, "status")
        output, _ = status.communicate(timeout=120)
        assert "to v7: running, rolling_back" in output
        assert "- drained, waiting for it to answer: host2" in output
        assert "unreachable - cannot connect to host2" in output
        host2.restore()  # it comes back: sent to v6, and only then undrained
        outcome = await asyncio.wait_for(task, 180)
    finally:
        host2.restore()
        store.close()
    assert outcome.status == "rolled_back"
    assert outcome.reason.endswith("; host2 back on v6 once it answered again"), outcome.reason
    assert edge_weights(site) == {"host1": 1, "host2": 1, "host3": 1}
    assert set((await site.actives()).values()) == {"v6"}


def edge_weights(site: Site) -> dict[str, int]:
    table = (site.project / ".nonstop" / "fleet" / "edge" / "route-table.json").read_text()
    return {u["instance_id"]: u["weight"] for u in json.loads(table)["upstreams"]}


async def test_the_controller_sees_an_agent_killed_and_ssh_dropped_then_both_back(
    site: Site,
) -> None:
    """Faults the controller must ride out: each shows as an unreachable host, never as its
    own failure, and the same controller reads the host again once it is back."""
    project = site.fleet_project()
    host = site.fleet.hosts[0]
    store = project.store()
    spec = run.FleetSpec("rolling", "-", None, ("host1",))
    try:
        async with run.controller(project, store, print) as control:
            before = await control.observe_host("host1", spec, 0)
            assert before.reachable
            agent = next(p for p in host.pids() if "nonstop.agent" in read_cmdline(p))
            os.kill(agent, signal.SIGKILL)
            assert not (await control.observe_host("host1", spec, 0)).reachable
            link = control.links["host1"]
            await link.get()
            assert link.connection is not None
            layout = HostLayout(project.fleet.host("host1").path)
            await start_agent(link.connection, layout, project.config.app.name)
            again = await control.observe_host("host1", spec, 0)
            assert (again.reachable, again.active) == (True, before.active)
            host.stop_sshd()
            assert not (await control.observe_host("host1", spec, 0)).reachable
            host.launch_sshd()
            back = await control.observe_host("host1", spec, 0)
            assert (back.reachable, back.active) == (True, before.active)
    finally:
        store.close()


async def test_a_host_whose_agent_dies_during_its_deploy_call_is_retried_and_converges(
    site: Site, tmp_path: Path
) -> None:
    """The agent of one host is killed while the controller's call to start the release there
    is in flight (the host's build of it runs): the host is retried once its agent answers
    again, the lockstep completes with every host on the release, and the host ran exactly one
    rollout of it (the retry is the same declarative step, done once)."""
    build = site.holding_build(tmp_path / "held")
    site.write("v8", extra='retries = 6\nretry_backoff = "0.5s"\n', build=build)
    project = site.fleet_project()
    store = project.store()
    task = asyncio.create_task(site.deploy("bluegreen", "v8"))
    deadline = time.monotonic() + 120
    try:
        while (found := site.running_build()) is None:
            assert not task.done(), task.result()
            assert time.monotonic() < deadline, "no host's build of v8 ever started"
            await asyncio.sleep(0.05)
        host, holding = found
        os.kill(agent_pid(host), signal.SIGKILL)  # its deploy call is in flight: the build holds
        os.kill(holding, signal.SIGKILL)
        await wait_for_state(
            store,
            lambda s: any(r.host == host.name and r.reason for r in s.retries),
            f"{host.name} retried",
            deadline,
        )
        status = cli(site, "status")
        output, _ = status.communicate(timeout=60)
        line = next(row for row in output.splitlines() if row.startswith(f"{host.name} ("))
        assert re.search(r" - retrying \(attempt [2-7] of 7\): ", line), output
        await site.restart_agent(host.name)
        outcome = await asyncio.wait_for(task, 180)
    finally:
        if not task.done():
            task.cancel()
        store.close()
    assert (outcome.status, outcome.reason) == ("completed", "every host serves v8")
    events = [m for _, m in FleetStore(project.folder / "fleet.db").events(outcome.id)]
    first = f"{host.name}: start v8 did not take (attempt 1 of 7): "
    assert any(m.startswith(first) for m in events), events
    again = re.compile(rf"{host.name}: attempt [2-7] of 7: start v8 \(")
    assert any(again.match(m) for m in events), events
    assert set((await site.actives()).values()) == {"v8"}
    rows = await site.host_call(host.name, "GET", "/v1/rollouts?limit=50")
    assert isinstance(rows, list)
    assert [row["status"] for row in rows if row["candidate"] == "v8"] == ["completed"]
