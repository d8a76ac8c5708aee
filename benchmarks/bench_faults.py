"""Faults under load, for each router: what users lose, and how long until it is over.

Scenarios (each run with `nonstop verify`'s load generator, 5 s client timeout: a request that
gets no answer in 5 s counts as failed; 1,000 connections, so a stuck request never delays
another):

  crash-after-ready  deploy v2 whose instances pass /health, then exit 1.5 s after start (and are
                     restarted, and exit again): the rollout must not complete; traffic goes back
  hung-instance      kill -STOP one of 2 instances at 200 req/s (kill -CONT at the end)
  killed-instance    kill -9 one of 2 instances at 130 req/s
  killed-router      kill -9 the router process; the agent restarts it
  full-disk          the state dir on a 64 MB tmpfs, filled up, then an instance is killed; then
                     space is freed and v2 is deployed (root only: needs mount)
  agent-kill         kill the agent at each journalled transition (intent/done of scale and
                     weights, finish) of five deploys in a row, restart it each time

For each: failed requests of all sent, "recovered": seconds from the fault to the end of the last
second with a failed request (0 when nothing failed), and the rollout's outcome where there is
one.

    .venv/bin/python benchmarks/bench_faults.py [--routers caddy,haproxy,nginx] [--scenarios ...]
        [--upstream-timeout 3s]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_deploy import Project, machine

from nonstop.drivers.router.registry import ROUTERS
from nonstop.loadgen.generator import LoadGenerator
from nonstop.loadgen.report import LoadReport

CONFIG = """\
[app]
name = "faults"
command = "{python} app.py --port {{port}}"
replicas = 2
stop_timeout = "5s"
drain_timeout = "5s"

[health]
interval = "100ms"
start_period = "20s"

[router]
kind = "{router}"
listen = "127.0.0.1:{port}"
{router_extra}

[strategy.bluegreen]
keep_previous = "10m"

[watch]
duration = "10s"
"""

CRASH_POINTS = ("intent:scale", "done:scale", "intent:weights", "done:weights", "finish")


@dataclass
class Result:
    scenario: str
    router: str
    sent: int
    failed: int
    recovered_s: float
    outcome: str = ""


ROUTER_EXTRA = ""
"""Extra [router] lines for every scenario (``--upstream-timeout``)."""


class FaultProject(Project):
    def __init__(self, router: str, state_on_tmpfs: bool = False) -> None:
        super().__init__()
        self.router = router
        (self.root / "nonstop.toml").write_text(
            CONFIG.format(
                python=sys.executable, port=self.port, router=router, router_extra=ROUTER_EXTRA
            )
        )
        self.mounted = False
        if state_on_tmpfs:
            self.paths.state.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(self.paths.state)],
                check=True,
            )
            self.mounted = True

    async def deploy_env(self, release: str, env: dict[str, str]) -> int:
        from nonstop.config import load_config, to_wire

        body = {
            "release": release,
            "path": str(self.root),
            "env": {"VERSION": release, **env},
            "config": to_wire(load_config(self.paths.config)),
        }
        row = await self.client.request("POST", "/v1/deploy", body)
        return int(row["id"])

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.client.request("GET", "/v1/status")
        return status

    async def instance_pids(self, release: str) -> list[int]:
        status = await self.status()
        return [
            int(i["pid"])
            for i in status["instances"]
            if i["release"] == release and i["state"] == "ready" and i["pid"]
        ]

    async def close(self) -> None:
        await super().close()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.paths.state)], check=False)


def recovered_after(report: LoadReport, fault_at: float, began: float) -> float:
    """Seconds from the fault to the end of the last second that had a failed request."""
    failing = [s.second for s in report.timeline if s.failed]
    if not failing:
        return 0.0
    return max(0.0, began + max(failing) + 1 - fault_at)


async def under_load(
    url: str, rps: int, seconds: float, fault: Callable[[], Awaitable[str]]
) -> tuple[LoadReport, float, float, str]:
    # 1,000 connections: enough that requests stuck on a hung instance (each holds one for the
    # 5 s timeout) never make the others queue for a connection, as independent clients would.
    gen = LoadGenerator(url, rps, duration=seconds, timeout=5.0, connections=1000)
    began = time.time()
    await gen.start()
    await asyncio.sleep(2)
    fault_at = time.time()
    outcome = await fault()
    await gen.finished()
    report = await gen.stop()
    return report, began, fault_at, outcome


async def scenario(
    name: str,
    router: str,
    rps: int,
    seconds: float,
    fault: Callable[[FaultProject], Awaitable[str]],
    *,
    tmpfs: bool = False,
) -> Result:
    project = FaultProject(router, state_on_tmpfs=tmpfs)
    try:
        await project.start_agent()
        await project.wait(await project.deploy("v1"))
        report, began, fault_at, outcome = await under_load(
            project.url, rps, seconds, lambda: fault(project)
        )
        recovered = recovered_after(report, fault_at, began)
        return Result(name, router, report.scheduled, report.failed, recovered, outcome)
    finally:
        await project.close()


async def crash_after_ready(project: FaultProject) -> str:
    rollout = await project.deploy_env("v2", {"CRASH_AFTER": "1.5"})
    row = await project.wait(rollout, timeout=180)
    return f"rollout {row['status']}"


async def hung_instance(project: FaultProject) -> str:
    pid = (await project.instance_pids("v1"))[0]
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(10)
    finally:
        os.kill(pid, signal.SIGCONT)
    return "SIGSTOP 10 s, then SIGCONT"


async def killed_instance(project: FaultProject) -> str:
    pid = (await project.instance_pids("v1"))[0]
    os.kill(pid, signal.SIGKILL)
    return "instance SIGKILL"


async def killed_router(project: FaultProject) -> str:
    pid = (await project.status())["router"]["pid"]
    os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            router = (await project.status())["router"]
            if router["alive"] and router["pid"] != pid:
                return "router SIGKILL, restarted"
        await asyncio.sleep(0.1)
    return "router SIGKILL, NOT restarted within 60 s"


async def full_disk(project: FaultProject) -> str:
    filler = project.paths.state / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (1 << 20))
            out.flush()
    pid = (await project.instance_pids("v1"))[0]
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(5)
    alive = len(await project.instance_pids("v1"))
    filler.unlink()
    rollout = await project.deploy_env("v2", {})
    row = await project.wait(rollout, timeout=120)
    return f"{alive}/2 ready while full; v2 after freeing: {row['status']}"


async def agent_kill(project: FaultProject) -> str:
    outcomes = []
    for number, point in enumerate(CRASH_POINTS, start=2):
        assert project.agent is not None
        project.agent.send_signal(signal.SIGTERM)
        await asyncio.to_thread(project.agent.wait)
        await project.start_agent({"NONSTOP_CRASH_AT": point})
        rollout = await project.deploy(f"v{number}")
        await asyncio.to_thread(project.agent.wait)
        await project.start_agent()
        row = await project.wait(rollout)
        outcomes.append(f"{point}: {row['status']}")
    return "; ".join(outcomes)


SCENARIOS: dict[str, tuple[int, float, Callable[[FaultProject], Awaitable[str]]]] = {
    "crash-after-ready": (100, 40, crash_after_ready),
    "hung-instance": (200, 16, hung_instance),
    "killed-instance": (130, 12, killed_instance),
    "killed-router": (100, 15, killed_router),
    "full-disk": (100, 40, full_disk),
    "agent-kill": (100, 90, agent_kill),
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routers", default=",".join(ROUTERS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--upstream-timeout", help='[router] upstream_timeout, e.g. "3s"')
    args = parser.parse_args()
    if args.upstream_timeout:
        global ROUTER_EXTRA
        ROUTER_EXTRA = f'upstream_timeout = "{args.upstream_timeout}"'
        print(f"[router] {ROUTER_EXTRA}")
    if "haproxy" in args.routers and not shutil.which("haproxy"):
        sys.exit("haproxy is not installed: run scripts/install-system-deps.sh")
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d')}", flush=True)
    print("| scenario | router | failed / sent | recovered | outcome |")
    print("|---|---|---|---|---|")
    for name in args.scenarios.split(","):
        if name == "full-disk" and os.geteuid() != 0:
            print(f"| {name} | - | skipped: needs root to mount a tmpfs | | |")
            continue
        rps, seconds, fault = SCENARIOS[name]
        for router in args.routers.split(","):
            try:
                r = await scenario(name, router, rps, seconds, fault, tmpfs=name == "full-disk")
                line = f"| {name} | {router} | {r.failed} / {r.sent} | "
                line += f"{r.recovered_s:.0f} s | {r.outcome} |"
            except Exception as exc:  # a scenario that breaks is a result too
                line = f"| {name} | {router} | - | - | error: {exc.__class__.__name__}: {exc} |"
            print(line, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
