"""WebSockets through deploys: 200 clients through Caddy and HAProxy across blue-green, rolling
and canary deploys and an instance kill (real agent, real routers, the sample app's /ws).

Per scenario and router, measured by nonstop.loadgen.websockets.WebSocketHolder:

  abrupt      connections that ended without a close frame, not on a killed instance (goal 0)
  survivors   connections closed on an instance that kept serving (goal 0)
  all-on-new  seconds from the moment the last old instance left the table (its drain start,
              polled from the agent) until every client was on the new release
              (goal <= drain_timeout + 2 s; the kill: until every client is connected again)
  gap p50/p99/max, reconnect span and peak reconnects per 100 ms

Beside each, in the same run, the baseline: the same scenario with ``[router] stream_grace``
equal to the drain timeout, which is how the routers closed streams before (Caddy's
stream_close_delay, HAProxy's shutdown of a leaving server's sessions, nginx's
worker_shutdown_timeout).

    .venv/bin/python benchmarks/bench_websockets.py [--clients 200] [--routers caddy,haproxy]
        [--scenarios bluegreen,rolling,canary,kill] [--baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_canary import Project, machine

from nonstop.loadgen.websockets import WebSocketHolder, WebSocketReport

DRAIN = 5.0
STRATEGY = {
    "bluegreen": ("bluegreen", '\n[strategy.bluegreen]\nkeep_previous = "0s"\n'),
    "rolling": ("rolling", "\n[strategy.rolling]\nmax_surge = 1\nmax_unavailable = 0\n"),
    "canary": (
        "canary",
        '\n[strategy.canary]\nsteps = [{ weight = 50, pause = "2s" }]\n',
    ),
    "kill": ("bluegreen", ""),
}
WATCH = '\n[watch]\nduration = "1s"\n'


@dataclass
class Result:
    router: str
    scenario: str
    grace: str
    report: WebSocketReport
    survivors_closed: int
    all_on_new: float | None

    def row(self) -> str:
        r, gaps, spread = self.report, self.report.gap_stats(), self.report.spread()
        new = "-" if self.all_on_new is None else f"{self.all_on_new:.1f}"
        return (
            f"| {self.router} | {self.scenario} | {self.grace} | {r.clients} | {len(r.abrupt)} "
            f"| {len(r.excused)} | {self.survivors_closed} | {new} | {gaps['p50']} / "
            f"{gaps['p99']} / {gaps['max']} | {spread['span_s']} | {spread['peak_per_100ms']} |"
        )


class DrainWatch:
    """Polls the agent: when each instance was first seen draining (its drain start)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.started: dict[str, float] = {}
        self.task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            status = await self.project.client.request("GET", "/v1/status")
            for i in status["instances"]:
                if i["state"] == "draining" and i["drain_deadline"]:
                    self.started.setdefault(i["id"], float(i["drain_deadline"]) - DRAIN)
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        self.task.cancel()


async def instances(project: Project, release: str) -> list[dict[str, Any]]:
    status = await project.client.request("GET", "/v1/status")
    return [i for i in status["instances"] if i["release"] == release]


async def run_one(router: str, scenario: str, clients: int, grace: float | None) -> Result:
    kind, extra = STRATEGY[scenario]
    project = Project(kind, extra + WATCH)
    settings = f'kind = "{router}"\n'
    if grace is not None:
        settings += f'stream_grace = "{grace:g}s"\n'
    text = (project.root / "nonstop.toml").read_text()
    text = text.replace('drain_timeout = "5s"', f'drain_timeout = "{DRAIN:g}s"')
    (project.root / "nonstop.toml").write_text(text.replace("[router]\n", "[router]\n" + settings))
    holder = WebSocketHolder(f"ws://127.0.0.1:{project.port}/ws", clients)
    try:
        await project.start()
        await project.wait(await project.deploy("v1", {}))
        await holder.start()
        if not await holder.wait_all_on({"v1"}, 60):
            raise RuntimeError(f"clients did not all connect: {holder.snapshot()}")
        if scenario == "kill":
            return await _kill(project, holder, router, grace)
        return await _deploy(project, holder, router, scenario, grace)
    finally:
        if not holder._stopping.is_set():
            await holder.stop()
        await project.close()


async def _deploy(
    project: Project, holder: WebSocketHolder, router: str, scenario: str, grace: float | None
) -> Result:
    old = {i["id"] for i in await instances(project, "v1")}
    watch = DrainWatch(project)
    rollout = await project.deploy("v2", {})
    on_new = await holder.wait_all_on({"v2"}, 120)
    at = time.time()
    await project.wait(rollout)
    watch.stop()
    starts = [t for i, t in watch.started.items() if i in old]
    report = await holder.stop()
    survivors = [c for c in report.closed if c.instance not in old]
    all_on_new = at - max(starts) if on_new and starts else None
    return Result(router, scenario, _grace(grace), report, len(survivors), all_on_new)


async def _kill(
    project: Project, holder: WebSocketHolder, router: str, grace: float | None
) -> Result:
    victim, _survivor = await instances(project, "v1")
    killed = time.time()
    os.kill(int(victim["pid"]), signal.SIGKILL)
    await asyncio.sleep(0.5)
    back = await holder.wait_connected(60)
    at = time.time()
    await asyncio.sleep(DRAIN + 2)  # a router that closes streams after a reload has done so
    report = await holder.stop({victim["id"]})
    survivors = [c for c in report.closed if c.instance != victim["id"]]
    return Result(
        router, "kill", _grace(grace), report, len(survivors), at - killed if back else None
    )


def _grace(grace: float | None) -> str:
    return "unset" if grace is None else f"{grace:g}s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--routers", default="caddy,haproxy")
    parser.add_argument("--scenarios", default="bluegreen,rolling,canary,kill")
    parser.add_argument("--baseline", action="store_true", help="also stream_grace = drain")
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.clients} clients; drain_timeout {DRAIN:g}s")
    print(
        "| router | scenario | stream_grace | clients | abrupt | abrupt on killed "
        "| closed on survivors | all on new (s) | gap p50 / p99 / max (s) | reconnect span (s) "
        "| peak reconnects / 100 ms |"
    )
    print("| --- " * 11 + "|")
    graces: list[float | None] = [None, DRAIN] if args.baseline else [None]
    for router in args.routers.split(","):
        for scenario in args.scenarios.split(","):
            for grace in graces:
                result = await run_one(router, scenario, args.clients, grace)
                print(result.row(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
