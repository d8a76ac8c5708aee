"""Canary analysis end to end: how fast a bad release is rolled back, and what it costs users.

A real agent, real Caddy, sample app instances (2 replicas), and a constant 200 requests/s from
nonstop.loadgen.LoadGenerator through the router for the whole rollout. Scenarios:

  sequential   bad release (ERROR_RATE=0.05), canary first step 5%, the sequential test on
               (the default), beside an error_rate check judged every 60 s
  fixed        the same bad release judged by a fixed-window threshold rule, as Flagger and
               Argo Rollouts are commonly configured: error_rate <= 1% over 1-minute windows,
               roll back on the first failing window (interval 60s, sequential = false)
  quick        a good release through preset = "quick" (5/25/50% for 10 s each, 30 s watch)
  rolling      a good release through a rolling update (max_surge 1, then a 10 s watch)

Measured per run: failed user requests (every non-2xx response, timeout or transport error the
load generator saw over the rollout) and, for the bad release, the time from the first weight
change that gave the canary traffic to the weight change that took it all back (both from the
rollout's journal timestamps; the first canary request follows the first within 1/10 s at 10
requests/s to the canary).

    .venv/bin/python benchmarks/bench_canary.py [--runs 3] [--scenarios sequential,fixed]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nonstop.agent.client import AgentClient
from nonstop.agent.paths import Paths
from nonstop.config import load_config, to_wire
from nonstop.loadgen.generator import LoadGenerator

RPS = 200
BASE = """\
[app]
name = "bench"
command = "{python} app.py --port {{port}}"
replicas = 2
stop_timeout = "3s"
drain_timeout = "5s"

[health]
interval = "100ms"
start_period = "20s"

[router]
listen = "127.0.0.1:{port}"

[strategy]
kind = "{kind}"
"""
BAD_CANARY = """
[strategy.canary]
steps = [{{ weight = 5, pause = "3m" }}, {{ weight = 50, pause = "3m" }}]
sequential = {sequential}

[[strategy.canary.analysis]]
metric = "error_rate"
max = 0.01
min_samples = 50
interval = "60s"
"""
QUICK = """
[strategy.canary]
preset = "quick"

# The preset's own watch, written out: a config sent through the API carries every [watch]
# default, so the preset's watch would otherwise be replaced by the 5-minute default.
[watch]
duration = "30s"
max_error_rate = 0.01
min_requests = 20
"""
ROLLING = """
[strategy.rolling]
max_surge = 1
max_unavailable = 0

[watch]
duration = "10s"
"""
SCENARIOS: dict[str, tuple[str, str, dict[str, str]]] = {
    # name: (strategy kind, extra config, env of the new release)
    "sequential": ("canary", BAD_CANARY.format(sequential="true"), {"ERROR_RATE": "0.05"}),
    "fixed": ("canary", BAD_CANARY.format(sequential="false"), {"ERROR_RATE": "0.05"}),
    "quick": ("canary", QUICK, {}),
    "rolling": ("rolling", ROLLING, {}),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Run:
    scenario: str
    status: str
    failed: int
    requests: int
    canary_seconds: float | None
    """First canary weight to 0% canary weight (bad releases), from the journal."""
    reason: str


class Project:
    def __init__(self, kind: str, extra: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="nonstop-bench-canary-"))
        self.port = free_port()
        app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
        (self.root / "app.py").write_text(app)
        text = BASE.format(python=sys.executable, port=self.port, kind=kind) + extra
        (self.root / "nonstop.toml").write_text(text)
        self.paths = Paths(self.root)
        self.client = AgentClient(self.paths)
        self.agent: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self.paths.ensure()
        with self.paths.agent_log.open("ab") as log:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "nonstop.agent", str(self.root)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        for _ in range(600):
            if await self.client.aping():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"agent did not start: {self.paths.agent_log.read_text()[-2000:]}")

    async def deploy(self, release: str, env: dict[str, str]) -> int:
        config = to_wire(load_config(self.paths.config))
        body = {
            "release": release,
            "path": str(self.root),
            "env": {"VERSION": release, **env},
            "config": config,
        }
        row = await self.client.request("POST", "/v1/deploy", body)
        return int(row["id"])

    async def wait(self, rollout_id: int, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row: dict[str, Any] = await self.client.request("GET", f"/v1/rollouts/{rollout_id}")
            if row["status"] != "running":
                return row
            await asyncio.sleep(0.1)
        raise RuntimeError(f"rollout {rollout_id} did not finish in {timeout:g}s")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.request("POST", "/v1/shutdown", {"stop_instances": True})
            if self.agent is not None:
                await asyncio.to_thread(self.agent.wait, 30)
        if self.agent is not None and self.agent.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.agent.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def canary_seconds(row: dict[str, Any], candidate: str) -> float | None:
    """From the first weight change giving ``candidate`` traffic to the one taking it away."""
    first = None
    for entry in row["journal"]:
        action = entry["action"]
        if action["kind"] != "weights" or action["weights"] is None:
            continue
        share = action["weights"].get(candidate, 0)
        if share > 0 and first is None:
            first = float(entry["ts"])
        elif share == 0 and first is not None:
            return float(entry["ts"]) - first
    return None


async def run_once(scenario: str) -> Run:
    kind, extra, env = SCENARIOS[scenario]
    project = Project(kind, extra)
    try:
        await project.start()
        await project.wait(await project.deploy("v1", {}))
        gen = LoadGenerator(project.url, RPS, timeout=5.0, group_by_header="X-Release")
        await gen.start()
        await asyncio.sleep(2.0)
        rollout = await project.deploy("v2", env)
        try:
            done = await project.wait(rollout, timeout=240)
        except RuntimeError as exc:
            report = await gen.stop()
            events = await project.client.request("GET", f"/v1/events?rollout={rollout}")
            tail = "; ".join(e["message"][:160] for e in events[-6:])
            return Run(scenario, "timeout", report.failed, report.scheduled, None, f"{exc}: {tail}")
        await asyncio.sleep(1.0)
        report = await gen.stop()
        row = await project.client.request("GET", f"/v1/rollouts/{rollout}")
        seconds = canary_seconds(row, "v2") if done["status"] != "completed" else None
        return Run(
            scenario,
            done["status"],
            report.failed,
            report.scheduled,
            seconds,
            str(done.get("reason")),
        )
    finally:
        await project.close()


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.1f} (min {min(values):.1f}, max {max(values):.1f})"


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"nproc {os.cpu_count()}, {model}, Python {platform.python_version()}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    names = [s for s in args.scenarios.split(",") if s]
    for name in names:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}: expected some of {', '.join(SCENARIOS)}")
    print(f"machine: {machine()}; {RPS} requests/s; {args.runs} runs per scenario")
    results: dict[str, list[Run]] = {name: [] for name in names}
    for index in range(args.runs):
        for name in names:  # interleaved, so a slow minute of the machine hits every scenario
            run = await run_once(name)
            results[name].append(run)
            took = "-" if run.canary_seconds is None else f"{run.canary_seconds:.2f}s"
            print(
                f"run {index + 1} {name:10s} {run.status:12s} failed {run.failed:4d}/"
                f"{run.requests:5d}  canary traffic {took}  {run.reason[:110]}",
                flush=True,
            )
    print()
    print(f"{'scenario':12s} {'failed requests: median (min, max)':40s} canary traffic seconds")
    for name, runs in results.items():
        failed = spread([float(r.failed) for r in runs])
        seconds = spread([r.canary_seconds for r in runs if r.canary_seconds is not None])
        print(f"{name:12s} {failed:40s} {seconds}")
    if "sequential" in results and "fixed" in results:
        seq, fix = results["sequential"], results["fixed"]
        f_seq = statistics.median(r.failed for r in seq)
        f_fix = statistics.median(r.failed for r in fix)
        t_seq = [r.canary_seconds for r in seq if r.canary_seconds is not None]
        t_fix = [r.canary_seconds for r in fix if r.canary_seconds is not None]
        print()
        if f_seq:
            print(f"fixed / sequential failed requests (medians): {f_fix / f_seq:.1f}x")
        else:
            print(f"fixed / sequential failed requests (medians): {f_fix:g} vs 0")
        if t_seq and t_fix:
            ratio = statistics.median(t_fix) / statistics.median(t_seq)
            print(f"fixed / sequential time to rollback (medians): {ratio:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
