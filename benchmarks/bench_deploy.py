"""Zero-downtime proof at 500 requests/s, measured by a load tool that is not ours (hey) and
by `nonstop verify`, against an app that does NOT handle SIGTERM gracefully (it dies at once).

Scenarios (each under 30 s of constant load):
  bluegreen   deploy v2 with the blue-green strategy
  rollback    roll back to the warm previous release
  agent-kill  kill -9 the agent mid-rollout, start it again
  baseline    no nonstop: the same app restarted in place on its port (stop old, start new)

Also measured: switch time, from the deploy/rollback call to the last response served by the
old release (a sampler records the X-Release header of every response).

``--router`` picks the router kind nonstop runs (caddy, the default; haproxy; nginx).

    .venv/bin/python benchmarks/bench_deploy.py [--seconds 30] [--rps 500] [--tools hey,verify]
        [--router caddy|haproxy|nginx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp

from nonstop.agent.client import AgentClient
from nonstop.agent.paths import Paths
from nonstop.drivers.router.registry import ROUTERS
from nonstop.loadgen.generator import LoadGenerator

CONFIG = """\
[app]
name = "bench"
command = "{python} app.py --port {{port}} --no-graceful"
replicas = 2
stop_timeout = "5s"
drain_timeout = "10s"

[health]
interval = "100ms"
start_period = "20s"

[router]
kind = "{router}"
listen = "127.0.0.1:{port}"

[strategy.bluegreen]
keep_previous = "10m"
auto_promote = false      # the switch-time measurement starts at `nonstop promote`

[watch]
duration = "2s"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Result:
    scenario: str
    tool: str
    requests: int
    failed: int
    detail: str = ""
    switch_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- load tools -------------------------------------------------------------------------------


async def run_hey(url: str, rps: int, seconds: float) -> tuple[int, int, str]:
    """hey with 50 workers at rps/50 each: (requests, failed, summary)."""
    workers = 50
    process = await asyncio.create_subprocess_exec(
        "hey",
        "-z",
        f"{seconds}s",
        "-c",
        str(workers),
        "-q",
        str(rps / workers),
        "-t",
        "5",
        url,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = (await process.communicate())[0].decode()
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+Get ", out, re.M))
    total = sum(codes.values()) + errors
    failed = errors + sum(n for c, n in codes.items() if c >= 500)
    return total, failed, f"codes {codes} transport errors {errors}"


async def run_verify(url: str, rps: int, seconds: float) -> tuple[int, int, str]:
    gen = LoadGenerator(url, rps, duration=seconds, timeout=5.0)
    await gen.start()
    await gen.finished()
    report = await gen.stop()
    detail = report.verdict() + (f" {dict(report.errors)}" if report.errors else "")
    return report.scheduled, report.failed, detail


TOOLS = {"hey": run_hey, "verify": run_verify}


# -- the switch-time sampler ------------------------------------------------------------------


class Sampler:
    """Four request loops recording (finish time, X-Release) of every response."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, str]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Sampler:
        self.session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(4)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.session.close()

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                async with self.session.get(self.url) as response:
                    await response.read()
                    self.samples.append((time.time(), response.headers.get("X-Release", "?")))
            except aiohttp.ClientError:
                await asyncio.sleep(0.005)

    def switch_ms(self, called_at: float, old: str) -> float | None:
        after = [t for t, release in self.samples if release == old and t >= called_at]
        return (max(after) - called_at) * 1000 if after else 0.0


# -- a nonstop project ------------------------------------------------------------------------


class Project:
    router = "caddy"
    """The router kind every project of this run uses (``--router``)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="nonstop-bench-"))
        self.port = free_port()
        app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
        (self.root / "app.py").write_text(app)
        (self.root / "nonstop.toml").write_text(
            CONFIG.format(python=sys.executable, port=self.port, router=self.router)
        )
        self.paths = Paths(self.root)
        self.client = AgentClient(self.paths)
        self.agent: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start_agent(self, env: dict[str, str] | None = None) -> None:
        self.paths.ensure()
        with self.paths.agent_log.open("ab") as log:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "nonstop.agent", str(self.root)],
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        for _ in range(300):
            if await self.client.aping():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("agent did not start")

    async def deploy(self, release: str) -> int:
        from nonstop.config import load_config, to_wire

        config = to_wire(load_config(self.paths.config))
        body = {
            "release": release,
            "path": str(self.root),
            "env": {"VERSION": release},
            "config": config,
        }
        row = await self.client.request("POST", "/v1/deploy", body)
        return int(row["id"])

    async def promote_when_ready(self, rollout: int) -> dict[str, Any]:
        await self.wait_phase("awaiting_promote")
        await self.client.request("POST", "/v1/command", {"command": "promote"})
        return await self.wait(rollout)

    async def wait_phase(self, phase: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = await self.client.request("GET", "/v1/status")
            if (status.get("rollout") or {}).get("phase") == phase:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the rollout never reached {phase}")

    async def wait(self, rollout_id: int, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                row: dict[str, Any] = await self.client.request("GET", f"/v1/rollouts/{rollout_id}")
                if row["status"] != "running":
                    return row
            except Exception:  # the agent may be restarting
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"rollout {rollout_id} did not finish")

    async def close(self) -> None:
        try:
            await self.client.request("POST", "/v1/shutdown", {"stop_instances": True})
            if self.agent:
                await asyncio.to_thread(self.agent.wait, 30)
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


# -- scenarios --------------------------------------------------------------------------------


async def under_load(
    tool: str, url: str, rps: int, seconds: float, action: Any
) -> tuple[int, int, str, Any]:
    load = asyncio.create_task(TOOLS[tool](url, rps, seconds))
    await asyncio.sleep(seconds / 3)
    outcome = await action()
    total, failed, detail = await load
    return total, failed, detail, outcome


async def scenario_bluegreen(tool: str, rps: int, seconds: float) -> Result:
    project = Project()
    try:
        await project.start_agent()
        await project.wait(await project.deploy("v1"))

        async def act() -> float | None:
            async with Sampler(project.url) as sampler:
                rollout = await project.deploy("v2")
                await project.wait_phase("awaiting_promote")
                await asyncio.sleep(1)
                called = time.time()
                await project.client.request("POST", "/v1/command", {"command": "promote"})
                row = await project.wait(rollout)
                assert row["status"] == "completed", row
                await asyncio.sleep(1)
            return sampler.switch_ms(called, "v1")

        total, failed, detail, switch = await under_load(tool, project.url, rps, seconds, act)
        return Result("bluegreen deploy", tool, total, failed, detail, switch)
    finally:
        await project.close()


async def scenario_rollback(tool: str, rps: int, seconds: float) -> Result:
    project = Project()
    try:
        await project.start_agent()
        await project.wait(await project.deploy("v1"))
        await project.promote_when_ready(await project.deploy("v2"))

        async def act() -> float | None:
            async with Sampler(project.url) as sampler:
                await asyncio.sleep(1)
                called = time.time()
                row = await project.client.request("POST", "/v1/rollback")
                await project.wait(row["id"])
                await asyncio.sleep(1)
            return sampler.switch_ms(called, "v2")

        total, failed, detail, switch = await under_load(tool, project.url, rps, seconds, act)
        return Result("rollback (warm)", tool, total, failed, detail, switch)
    finally:
        await project.close()


async def scenario_agent_kill(tool: str, rps: int, seconds: float) -> Result:
    project = Project()
    try:
        await project.start_agent()
        await project.wait(await project.deploy("v1"))
        assert project.agent is not None
        project.agent.send_signal(signal.SIGKILL)
        project.agent.wait()

        async def act() -> None:
            await project.start_agent({"NONSTOP_CRASH_AT": "intent:weights"})
            rollout = await project.deploy("v2")
            await project.wait_phase("awaiting_promote")
            await project.client.request("POST", "/v1/command", {"command": "promote"})
            assert project.agent is not None
            await asyncio.to_thread(project.agent.wait)
            await project.start_agent()
            row = await project.wait(rollout)
            assert row["status"] == "completed", row

        total, failed, detail, _ = await under_load(tool, project.url, rps, seconds, act)
        return Result("agent kill -9 mid-rollout + restart", tool, total, failed, detail)
    finally:
        await project.close()


async def scenario_baseline(tool: str, rps: int, seconds: float) -> Result:
    """No nonstop: stop the old process, start the new one on the same port."""
    root = Path(tempfile.mkdtemp(prefix="nonstop-baseline-"))
    app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
    (root / "app.py").write_text(app)
    port = free_port()

    def start(version: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), "--no-graceful", "--version", version],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    old = start("v1")
    await asyncio.sleep(1)
    url = f"http://127.0.0.1:{port}/"

    async def act() -> float:
        old.terminate()
        old.wait()
        began = time.monotonic()
        new = start("v2")
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(url + "health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.01)
        act.new = new  # type: ignore[attr-defined]
        return (time.monotonic() - began) * 1000

    try:
        total, failed, detail, gap = await under_load(tool, url, rps, seconds, act)
    finally:
        getattr(act, "new", old).kill()
        shutil.rmtree(root, ignore_errors=True)
    return Result("baseline: restart in place", tool, total, failed, detail, extra={"gap_ms": gap})


SCENARIOS = {
    "bluegreen": scenario_bluegreen,
    "rollback": scenario_rollback,
    "agent-kill": scenario_agent_kill,
    "baseline": scenario_baseline,
}


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rps", type=int, default=500)
    parser.add_argument("--tools", default="hey,verify")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--router", choices=list(ROUTERS), default="caddy")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    Project.router = args.router
    tools = args.tools.split(",")
    if "hey" in tools and not shutil.which("hey"):
        sys.exit("hey is not installed: run scripts/install-system-deps.sh --bench")
    results = []
    for name in args.scenarios.split(","):
        for tool in tools:
            result = await SCENARIOS[name](tool, args.rps, args.seconds)
            results.append(result)
            switch = f"{result.switch_ms:.0f} ms" if result.switch_ms is not None else "-"
            print(
                f"{result.scenario:38} {tool:7} requests {result.requests:6} failed "
                f"{result.failed:5}  switch {switch:>8}  {result.extra or ''} {result.detail}",
                flush=True,
            )
    print(
        f"machine: {machine()}; router {args.router}; "
        f"load {args.rps} req/s for {args.seconds:g}s per run"
    )
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))


if __name__ == "__main__":
    asyncio.run(main())
