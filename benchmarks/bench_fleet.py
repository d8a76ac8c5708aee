"""Fleet rollouts on 4 real test hosts (network namespaces with sshd, agents, HAProxy per host),
the edge HAProxy in front, constant load from nonstop.loadgen through the edge.

Scenarios (in this order, on the same hosts):

  rolling   v1 -> v2, rolling with max_unavailable = 1: failed requests (goal 0)
  canary    v3 with ERROR_RATE=0.05 on the canary host: time from the canary host taking
            traffic (its "serve" event in the journal) to the rollout ending rolled_back
            (goal < 15 s), failed requests (goal < 30), and whether another host ever ran v3
  external  v4 rolling through an external load balancer (a HAProxy set up here, checking each
            host's /health every 0.2 s, down after 2 failures; front.drain_wait 1 s): failed
            requests (goal 0) and how often the LB took each host down (1: drained once)
  cut       v5 rolling; while host2 moves, host4's link is cut (ip link set down in its
            namespace): time until the edge marks host4 DOWN (goal < 2 s, polled every 20 ms
            through the edge's runtime API); the rollout pauses; abort; then the releases the
            reachable hosts serve (goal: all on v4, 0 on a mixed version); host4 restored: the
            rollback puts it on v4 and undrains it
  retry     v6 rolling; the agent of host1 is killed while the controller's deploy call to it
            is in flight (the host's build of v6 holds the call open), then started again, as
            its systemd unit would: failed requests (goal 0), the rollout completes with every
            host on v6, the retry in the journal, host1 ran exactly one rollout of v6
  switch    blue-green twice under load, v7 with ``fleet.front.switch = "hosts"`` (each host
            switches its own router) then v8 with "edge" (one pin at the edge, decision 0581),
            while PROBES clients each send one request after another through the edge: how
            many answers came from the old release after that client had already seen the new
            one (goal with the edge: 0), the span of that mixed window, failed requests (goal 0)

``--only retry`` (names, comma-separated) runs some of them; each needs a release the fleet
serves first, and runs ``rolling``'s first deploy when there is none.

Needs root (network namespaces) and the system packages of scripts/install-system-deps.sh.

    .venv/bin/python benchmarks/bench_fleet.py [--rps 300] [--hosts 4] [--only rolling,retry]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fleet.lb import DETECTION, load_balancer  # noqa: E402
from fleet.site import Answer, Site, agent_pid, one_by_one, site_of, under_load  # noqa: E402
from nonstop.fleet import run  # noqa: E402
from nonstop.fleet.bootstrap import build_wheelhouse  # noqa: E402
from nonstop.fleet.edge import Edge  # noqa: E402
from nonstop.fleet.store import FleetStore  # noqa: E402
from nonstop.loadgen.generator import LoadGenerator  # noqa: E402


def journal(site: Site) -> FleetStore:
    return FleetStore(site.project / ".nonstop" / "fleet" / "fleet.db")


async def rolling(site: Site, rps: float) -> dict[str, Any]:
    site.write("v1")
    await site.deploy("rolling", "v1")
    site.write("v2")
    started = time.monotonic()
    outcome, report = await under_load(site, rps, site.deploy("rolling", "v2"))
    return {
        "outcome": outcome.status,
        "seconds": round(time.monotonic() - started, 1),
        "requests": report.scheduled,
        "failed": report.failed,
        "by_release": dict(report.groups),
    }


async def canary(site: Site, rps: float) -> dict[str, Any]:
    site.write("v3", error_rate=0.05, extra='canary = ["host1"]\n')
    outcome, report = await under_load(site, rps, site.deploy("canary", "v3"))
    store = journal(site)
    events = store.events(outcome.id)
    store.close()
    served = next(at for at, message in events if message.startswith("host1 serve v3"))
    ended = events[-1][0]
    others = []
    for host in site.fleet.hosts[1:]:
        rows = await site.host_call(host.name, "GET", "/v1/rollouts?limit=100")
        assert isinstance(rows, list)
        others += [host.name for row in rows if row["candidate"] == "v3"]
    return {
        "outcome": outcome.status,
        "reason": outcome.reason,
        "canary_serving_to_rolled_back_s": round(ended - served, 2),
        "failed": report.failed,
        "requests": report.scheduled,
        "other_hosts_that_ran_v3": others,
    }


async def external(site: Site, rps: float, workdir: Path) -> dict[str, Any]:
    site.write("v4", front=f'[fleet.front]\nkind = "external"\ndrain_wait = "{DETECTION}"\n')
    with load_balancer(site, workdir) as balancer:
        await balancer.wait_all_up(time.monotonic() + 60)
        before = await balancer.transitions()
        started = time.monotonic()
        outcome, report = await under_load(
            site, rps, site.deploy("rolling", "v4"), front=balancer.listen
        )
        seconds = time.monotonic() - started
        after = await balancer.transitions()
    site.write("v4")  # the edge in front again for what follows
    return {
        "outcome": outcome.status,
        "seconds": round(seconds, 1),
        "requests": report.scheduled,
        "failed": report.failed,
        "by_release": dict(report.groups),
        "lb_took_down": {name: after[name] - before[name] for name in after},
    }


async def edge_marks_down(site: Site, name: str, deadline: float) -> float:
    """Seconds until the edge's runtime API shows ``name``'s server DOWN."""
    project = site.fleet_project()
    edge = Edge(project.folder / "edge", project.fleet, 1.0)
    host = project.fleet.host(name)
    server = f"{host.address}:{project.fleet.router_port}"
    started = time.monotonic()
    while time.monotonic() < deadline:
        stat = await edge.router.command("show stat")
        for line in stat.splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[1] == server and fields[17].startswith("DOWN"):
                return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise RuntimeError(f"the edge never marked {name} down")


async def cut(site: Site, rps: float) -> dict[str, Any]:
    site.write("v5")
    project = site.fleet_project()
    store = journal(site)
    lost = site.fleet.hosts[3]
    load = LoadGenerator(f"http://{site.edge}/", rps)
    await load.start()
    task = asyncio.create_task(site.deploy("rolling", "v5"))
    try:
        await until(store, lambda r: r.state.batch == ("host2",), time.monotonic() + 300)
        lost.cut()
        down_after = await edge_marks_down(site, lost.name, time.monotonic() + 30)
        await until(store, lambda r: bool(r.state.paused), time.monotonic() + 300)
        run.request(project, "abort")
        await until(store, lambda r: lost.name in r.state.lost, time.monotonic() + 300)
        reachable = {n: r for n, r in (await site.actives()).items() if n != lost.name}
        lost.restore()  # the rollback waits for it: back on the stable release, then undrained
        outcome = await asyncio.wait_for(task, 300)
    finally:
        report = await load.stop()
        lost.restore()
        store.close()
    serving = await site.actives()
    return {
        "edge_marked_down_s": round(down_after, 3),
        "outcome": outcome.status,
        "reason": outcome.reason,
        "reachable_hosts_serve": reachable,
        "mixed": len(set(reachable.values())) > 1,
        "every_host_after_it_returned": serving,
        "failed": report.failed,
        "requests": report.scheduled,
    }


async def retry(site: Site, rps: float, workdir: Path) -> dict[str, Any]:
    await serving_something(site)
    site.write("v6", build=site.holding_build(workdir / "held"))
    store = journal(site)
    load = LoadGenerator(f"http://{site.edge}/", rps, group_by_header="X-Release")
    await load.start()
    started = time.monotonic()
    task = asyncio.create_task(site.deploy("rolling", "v6"))
    try:
        while (found := site.running_build()) is None:
            if task.done():
                raise RuntimeError(f"no build of v6 held a deploy call: {task.result()}")
            await asyncio.sleep(0.02)
        host, holding = found
        os.kill(agent_pid(host), signal.SIGKILL)  # its deploy call is in flight
        os.kill(holding, signal.SIGKILL)
        retried = time.monotonic()
        await until(
            store,
            lambda r: any(x.host == host.name and x.reason for x in r.state.retries),
            time.monotonic() + 120,
        )
        await site.restart_agent(host.name)
        restarted = time.monotonic()
        outcome = await asyncio.wait_for(task, 300)
        seconds = time.monotonic() - started
    finally:
        report = await load.stop()
    events = [m for _, m in store.events(outcome.id) if m.startswith(f"{host.name}: ")]
    store.close()
    rows = await site.host_call(host.name, "GET", "/v1/rollouts?limit=100")
    assert isinstance(rows, list)
    return {
        "outcome": outcome.status,
        "reason": outcome.reason,
        "seconds": round(seconds, 1),
        "killed_to_agent_back_s": round(restarted - retried, 1),
        "retry_events": events,
        "every_host": await site.actives(),
        "host_rollouts_of_v6": [row["status"] for row in rows if row["candidate"] == "v6"],
        "requests": report.scheduled,
        "failed": report.failed,
        "by_release": dict(report.groups),
    }


PROBES = 4


async def switch(site: Site, rps: float) -> dict[str, Any]:
    await serving_something(site)
    results: dict[str, Any] = {}
    for release, how in (("v7", "hosts"), ("v8", "edge")):
        site.write(release, front=f'[fleet.front]\nlisten = "{site.edge}"\nswitch = "{how}"\n')
        old = next(iter(set((await site.actives()).values())))
        done = asyncio.Event()
        probes = [asyncio.create_task(one_by_one(site, done)) for _ in range(PROBES)]
        started, wall = time.monotonic(), time.time()
        try:
            outcome, report = await under_load(site, rps, site.deploy("bluegreen", release))
        finally:
            done.set()
        seen = [await probe for probe in probes]
        store = journal(site)
        events = [(round(ts - wall, 1), m) for ts, m in store.events(outcome.id)]
        store.close()
        results[how] = {
            "outcome": outcome.status,
            "seconds": round(time.monotonic() - started, 1),
            "requests": report.scheduled,
            "failed": report.failed,
            "status_codes": {str(k): v for k, v in report.status_codes.items()},
            "errors": dict(report.errors),
            "failed_at_s": {t.second: t.failed for t in report.timeline if t.failed},
            "events_at_s": events,
            "by_release": dict(report.groups),
            **mixed(seen, old, release),
        }
    return results


def mixed(seen: list[list[Answer]], old: str, new: str) -> dict[str, Any]:
    """Per client, the answers from ``old`` after its first answer from ``new``, and the span
    from that first ``new`` answer to its last ``old`` one (0 when it never went back)."""
    back, span, answers = 0, 0.0, 0
    for answers_of_one in seen:
        answers += len(answers_of_one)
        first = next((a.sent for a in answers_of_one if a.release == new), None)
        if first is None:
            continue
        late = [a.sent for a in answers_of_one if a.release == old and a.sent > first]
        back += len(late)
        span = max(span, max(late, default=first) - first)
    return {
        "probe_answers": answers,
        "old_after_new": back,
        "mixed_window_s": round(span, 3),
    }


async def serving_something(site: Site) -> None:
    if None in (await site.actives()).values():
        site.write("v1")
        await site.deploy("rolling", "v1")


async def until(store: FleetStore, check: Any, deadline: float) -> None:
    while True:
        running = store.running()
        if running is not None and check(running):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the rollout never reached the awaited state")
        await asyncio.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rps", type=float, default=300)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--only", default="rolling,canary,external,cut,retry,switch")
    args = parser.parse_args()
    only = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="nonstop-bench-fleet-") as folder:
        work = Path(folder)
        wheels = work / "wheels"
        build_wheelhouse(wheels)
        with site_of(args.hosts, work / "site", wheels) as site:
            scenarios = {
                "rolling": lambda: rolling(site, args.rps),
                "canary": lambda: canary(site, args.rps),
                "external": lambda: external(site, args.rps, work / "lb"),
                "cut": lambda: cut(site, args.rps),
                "retry": lambda: retry(site, args.rps, work),
                "switch": lambda: switch(site, args.rps),
            }
            results: dict[str, Any] = {
                "machine": f"{platform.node()} nproc={os.cpu_count()} load={os.getloadavg()}",
                "rps": args.rps,
                "hosts": args.hosts,
            }
            for name, scenario in scenarios.items():
                if name in only:
                    if name in ("canary", "external", "cut"):
                        asyncio.run(serving_something(site))
                    results[name] = asyncio.run(scenario())
            results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
