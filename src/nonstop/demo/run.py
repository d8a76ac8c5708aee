"""``nonstop demo``: the whole story on the bundled sample app, measured.

In a temporary directory: start an agent, deploy v1, then a blue-green deploy of v2 and a
rollback to v1 while a constant-rate load runs through the router, WebSocket clients hold
connections to /ws and jobs go into the worker role's queue (demo/worker.py); print one row
per step (duration, requests, failed, p99, what happened to the WebSockets, the jobs done,
lost and run twice) and clean up every process it started.

The WebSocket story: a switch closes no connection; the release switched away from stays warm
for rollback and, at its drain deadline (2 s here), gets the app's quiet signal (SIGUSR1): it
closes its WebSockets with 1001 and a reconnect hint, and the clients reconnect to the release
that now serves. A step's row is written once every client is there (or says that they are
not).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nonstop.agent.client import AgentClient
from nonstop.agent.paths import Paths
from nonstop.errors import StateError
from nonstop.loadgen.generator import LoadGenerator
from nonstop.loadgen.websockets import WebSocketHolder, WebSocketReport

WS_CLIENTS = 20
DRAIN = 2.0
"""The demo's drain timeout: its requests take a millisecond, and the kept-warm side's clients
move at this deadline (docs/websockets.md)."""
JOB_RATE = 20.0
"""Jobs a second into the worker role's queue during a step under load."""
JOBS_TIMEOUT = 20.0
"""How long a step waits for its jobs to be done before it counts the missing as lost."""
MOVE_TIMEOUT = 20.0
"""How long a step waits for every client to be on the serving release: the drain deadline,
the app's 1 s reconnect window and a loaded machine's delays, generously."""

CONFIG = """\
[app]
name = "demo"
command = "{python} app.py --port {{port}}"
replicas = 2
stop_timeout = "5s"
drain_timeout = "{drain:g}s"
quiet_signal = "SIGUSR1"

[processes.worker]
command = "{python} worker.py"
replicas = 2
quiet_signal = "SIGTSTP"
quiet_grace = "1s"
stop_timeout = "5s"
env = {{ JOBS_DIR = "{jobs}" }}

[health]
path = "/health"
interval = "200ms"
start_period = "20s"

[router]
listen = "127.0.0.1:{port}"

[strategy]
kind = "bluegreen"

[strategy.bluegreen]
smoke = "{python} smoke.py"
keep_previous = "60s"

[watch]
duration = "3s"
max_error_rate = 0.02
"""


@dataclass(frozen=True)
class JobCount:
    sent: int
    done: int
    lost: int
    twice: int


class JobFeeder:
    """Enqueue a job (0.2 s long) into the worker role's directory queue ``rate`` times a
    second while a step runs, then count the ledger (demo/worker.py) once all are done."""

    def __init__(self, jobs: Path, prefix: str, rate: float = JOB_RATE) -> None:
        self.pending, self.done = jobs / "pending", jobs / "done"
        self.pending.mkdir(parents=True, exist_ok=True)
        self.prefix, self.rate = prefix, rate
        self.sent: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._feed())

    async def _feed(self) -> None:
        while True:
            name = f"{self.prefix}-{len(self.sent) + 1:05d}"
            staged = self.pending.parent / f".{name}"
            staged.write_text("0.2")
            staged.rename(self.pending / name)  # whole, or not at all, for the workers
            self.sent.append(name)
            await asyncio.sleep(1.0 / self.rate)

    async def stop(self, timeout: float = JOBS_TIMEOUT) -> JobCount:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        deadline = time.monotonic() + timeout
        while self._finished() < len(self.sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        runs = Counter(entry.name.split(".", 1)[0] for entry in self.done.iterdir())
        done = sum(1 for job in self.sent if runs[job])
        twice = sum(1 for job in self.sent if runs[job] > 1)
        return JobCount(len(self.sent), done, len(self.sent) - done, twice)

    def _finished(self) -> int:
        return len({e.name.split(".", 1)[0] for e in self.done.iterdir()} & set(self.sent))


@dataclass
class StepResult:
    step: str
    ok: bool
    seconds: float
    requests: int
    failed: int
    p99_ms: float | None
    detail: str
    websockets: WebSocketReport | None = None
    serving: str = ""
    """The release that serves once the step is over: where the clients should end."""
    jobs: JobCount | None = None

    def jobs_summary(self) -> str:
        """``120 done, 0 lost, 0 twice``."""
        if self.jobs is None:
            return "-"
        j = self.jobs
        return f"{j.done} done, {j.lost} lost, {j.twice} twice"

    def ws_summary(self) -> str:
        """``20 closed by v1 (1001), 0 abrupt; all 20 now on v2``: the side switched
        away from was quieted at its drain deadline and its clients reconnected. Clients that
        did not get there are named: ``... still on v1 3 (kept warm, not yet quieted)``."""
        ws = self.websockets
        if ws is None:
            return "-"
        by = Counter(c.release for c in ws.closed if not c.abrupt)
        closed = ", ".join(f"{n} closed by {r} (1001)" for r, n in sorted(by.items()))
        head = f"{closed or '0 closed'}, {len(ws.abrupt)} abrupt"
        moved = ws.ended_on.get(self.serving, 0)
        if moved == ws.clients:
            return f"{head}; all {moved} now on {self.serving}"
        behind = ", ".join(f"{r} {n}" for r, n in ws.ended_on.items() if r != self.serving)
        return f"{head}; {moved} on {self.serving}, still on {behind} (kept warm, not yet quieted)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SMOKE = """\
import os, sys, urllib.request
body = urllib.request.urlopen(os.environ["NONSTOP_TARGET_URL"] + "/", timeout=5).read().decode()
print("smoke:", body)
sys.exit(0 if body.startswith("version=") else 1)
"""


def write_project(root: Path, port: int, jobs: Path) -> Paths:
    """The project in ``root``; the worker role's queue in ``jobs``, outside it (a deploy
    copies the project: a queue inside would be copied, and change under the copy)."""
    app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
    (root / "app.py").write_text(app)
    (root / "smoke.py").write_text(SMOKE)
    worker = resources.files("nonstop.demo").joinpath("worker.py").read_text()
    (root / "worker.py").write_text(worker)
    text = CONFIG.format(python=sys.executable, port=port, drain=DRAIN, jobs=jobs)
    (root / "nonstop.toml").write_text(text)
    return Paths(root)


async def wait_rollout(agent: AgentClient, rollout_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row: dict[str, Any] = await agent.request("GET", f"/v1/rollouts/{rollout_id}")
        if row["status"] != "running":
            return row
        await asyncio.sleep(0.2)
    raise StateError(f"rollout {rollout_id} did not finish within {timeout:g}s")


async def step(
    name: str,
    agent: AgentClient,
    call: tuple[str, str, dict[str, Any] | None],
    url: str | None,
    rps: float,
    serving: str = "",
    jobs: Path | None = None,
) -> StepResult:
    """Run one agent call to completion, under load when ``url`` is given."""
    load = LoadGenerator(url, rps, timeout=5.0) if url else None
    holder = WebSocketHolder(url.replace("http", "ws", 1) + "ws", WS_CLIENTS) if url else None
    feeder = JobFeeder(jobs, serving) if url and jobs else None
    if load and holder:
        if feeder:
            feeder.start()
        await load.start()
        await holder.start()
        await holder.wait_connected(10.0)
        await asyncio.sleep(1.0)  # traffic flows before anything changes
    began = time.monotonic()
    row = await agent.request(*call)
    final = await wait_rollout(agent, row["id"])
    seconds = time.monotonic() - began
    ws = None
    if load and holder:
        await asyncio.sleep(1.0)  # and keeps flowing after
        await holder.wait_all_on({serving}, MOVE_TIMEOUT)  # the report says if they did not
        report = await load.stop()
        ws = await holder.stop()
        counted = await feeder.stop() if feeder else None
        requests, failed, p99 = report.scheduled, report.failed, report.latency_scheduled.p99
    else:
        requests, failed, p99, counted = 0, 0, None, None
    ok = final["status"] == "completed" and failed == 0 and (ws is None or ws.passed)
    ok = ok and (counted is None or counted.lost == counted.twice == 0)
    detail = final["reason"] or ""
    return StepResult(name, ok, seconds, requests, failed, p99, detail, ws, serving, counted)


async def run_demo(root: Path, rps: float) -> list[StepResult]:
    from nonstop.cli.core import spawn_agent

    port = free_port()
    jobs, root = root / "jobs", root / "project"
    root.mkdir()
    paths = write_project(root, port, jobs)
    spawn_agent(paths)
    agent = AgentClient(paths)
    deadline = time.monotonic() + 30
    while not await agent.aping():
        if time.monotonic() > deadline:
            raise StateError(f"the demo agent did not start; see {paths.agent_log}")
        await asyncio.sleep(0.1)
    config = _config(paths)
    url = f"http://127.0.0.1:{port}/"
    results = []
    try:
        for name, release, under_load in (
            ("deploy v1 (first release)", "v1", False),
            ("blue-green deploy v2", "v2", True),
        ):
            body = {
                "release": release,
                "path": str(root),
                "env": {"VERSION": release},
                "config": config,
            }
            target = url if under_load else None
            call = ("POST", "/v1/deploy", body)
            results.append(await step(name, agent, call, target, rps, release, jobs))
        rollback = ("POST", "/v1/rollback", None)
        results.append(await step("rollback to v1", agent, rollback, url, rps, "v1", jobs))
    finally:
        await agent.request("POST", "/v1/shutdown", {"stop_instances": True})
        await _wait_gone(paths)
    return results


def _config(paths: Paths) -> dict[str, Any]:
    from nonstop.config import load_config, to_wire

    return to_wire(load_config(paths.config))


async def _wait_gone(paths: Paths, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while paths.pidfile.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def main(rps: float = 200, keep: bool = False) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    root = Path(tempfile.mkdtemp(prefix="nonstop-demo-"))
    console.print(f"demo project in {root}; load: {rps:g} requests/s through the router")
    began = time.monotonic()
    try:
        results = asyncio.run(run_demo(root, rps))
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    table = Table("step", "result", "duration", "requests", "failed", "p99", "websockets", "jobs")
    for r in results:
        table.add_row(
            r.step,
            "[green]ok[/]" if r.ok else f"[red]FAILED[/] {r.detail}",
            f"{r.seconds:.1f}s",
            str(r.requests) if r.requests else "-",
            str(r.failed) if r.requests else "-",
            f"{r.p99_ms:.1f} ms" if r.p99_ms is not None else "-",
            r.ws_summary(),
            r.jobs_summary(),
        )
    console.print(table)
    total = sum(r.requests for r in results)
    failed = sum(r.failed for r in results)
    all_ok = all(r.ok for r in results)
    verdict = "[green]zero downtime[/]" if all_ok else "[red]something failed[/]"
    took = time.monotonic() - began
    console.print(f"{verdict}: {total - failed}/{total} requests ok; demo took {took:.1f}s")
    return 0 if all_ok else 1
