"""Both routers, default settings, when one of two instances fails under steady load.

1. Hung instance: 2 instances (each a tiny aiohttp app in its own process, with /health) behind
   the router, an open-model client at ``--rate`` requests/s (default 200, each request with a
   5 s client timeout: a timeout counts as failed); after 3 s one instance gets SIGSTOP and
   stays stopped. Nobody changes the route table: only the router's own health checks act.
2. Crashed instance: the same at ``--crash-rate`` (default 130) requests/s; after 3 s one
   instance gets SIGKILL, and 50 ms later the table drops it (what the agent does when it sees
   the exit: a reload at the moment requests are being retried off the dead instance); 1 s later
   a replacement joins the table.

Baseline, in the same run: the same load with no fault (fault "none"), which must fail nothing
on this machine for the other numbers to mean anything. Reported per router and scenario:
requests sent, failed (any non-200 or client error), and
"left rotation": the time from the fault to the start of the last request that failed or took
over 1 s (after that, every request was served at once). Only 127.0.0.1; about a minute.

    .venv/bin/python benchmarks/bench_faults_router.py [--rate 200] [--crash-rate 130]
        [--seconds 12] [--router caddy|haproxy|both] [--upstream-timeout S]
        [--only hang|kill] [--repeat N]
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
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from nonstop.drivers.router.base import RouteTable, Upstream
from nonstop.drivers.router.managed import ManagedRouter
from nonstop.drivers.router.registry import ROUTERS
from nonstop.drivers.router.settings import RouterSettings

APP = """
import sys
from aiohttp import web
name = sys.argv[2]
async def hello(request):
    return web.Response(text=name)
app = web.Application()
app.router.add_get("/health", hello)
app.router.add_get("/{tail:.*}", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
FAULT_AT = 3.0
CLIENT_TIMEOUT = 5.0
SLOW = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Instance:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def upstream(self) -> Upstream:
        return Upstream(self.name, "v1", self.address, 1)

    def end(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)


async def start_instance(name: str) -> Instance:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", APP, str(port), name])
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    if response.status == 200:
                        return Instance(name, port, process)
            await asyncio.sleep(0.05)
    process.kill()
    raise RuntimeError(f"instance {name} did not start")


@dataclass
class Outcome:
    sent: float
    took: float
    ok: bool
    what: str


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)

    def summary(self, fault: float) -> dict[str, Any]:
        bad = [o for o in self.outcomes if not o.ok or o.took > SLOW]
        after = [o.sent - fault for o in bad if o.sent >= fault - SLOW]
        failed = [o for o in self.outcomes if not o.ok]
        return {
            "sent": len(self.outcomes),
            "failed": len(failed),
            "reasons": dict(Counter(o.what for o in failed).most_common(4)),
            "left_rotation_s": round(max(after), 2) if after else 0.0,
            "slowest_s": round(max((o.took for o in self.outcomes), default=0.0), 2),
        }


async def open_load(listen: str, rate: float, seconds: float, run: Run) -> None:
    """One request every 1/rate s whatever the answers (open model), each on its own."""
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(sent: float) -> None:
            try:
                async with session.get(f"http://{listen}/") as response:
                    await response.read()
                    ok, what = response.status == 200, str(response.status)
            except TimeoutError:
                ok, what = False, "client timeout (5 s)"
            except aiohttp.ClientError as exc:
                ok, what = False, type(exc).__name__
            run.outcomes.append(Outcome(sent, time.monotonic() - sent, ok, what))

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        n = 0
        while (now := time.monotonic()) - start < seconds:
            due = start + n / rate
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(one(time.monotonic())))
            n += 1
        await asyncio.gather(*tasks)


def make_router(kind: str, state: Path, options: dict[str, Any]) -> ManagedRouter:
    # Default settings, plus the health path the agent passes from nonstop.toml.
    settings = RouterSettings(listen=f"127.0.0.1:{free_port()}", health_path="/health", **options)
    return ROUTERS[kind](state, settings)


async def scenario(
    kind: str, fault: str, rate: float, seconds: float, options: dict[str, Any]
) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="nsbf-", dir="/tmp"))
    router = make_router(kind, state, options)
    instances = [await start_instance("a"), await start_instance("b")]
    run = Run()
    try:
        await router.start()
        await router.apply(RouteTable(tuple(i.upstream() for i in instances)))
        load = asyncio.create_task(open_load(router.listen, rate, seconds, run))
        await asyncio.sleep(FAULT_AT)
        fault_at = time.monotonic()
        victim = instances[1]
        if fault == "none":  # the baseline: the same load, nothing fails
            pass
        elif fault == "hang":
            os.kill(victim.process.pid, signal.SIGSTOP)
        else:
            os.kill(victim.process.pid, signal.SIGKILL)
            await asyncio.sleep(0.05)  # the agent sees the exit and drops it from the table
            await router.apply(RouteTable((instances[0].upstream(),)))
            replacement = await start_instance("c")
            instances.append(replacement)
            await router.apply(RouteTable((instances[0].upstream(), replacement.upstream())))
        await load
        return {"router": kind, "fault": fault, "rate": rate, **options, **run.summary(fault_at)}
    finally:
        await router.stop()
        for instance in instances:
            instance.end()
        shutil.rmtree(state, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--crash-rate", type=float, default=130)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--router", choices=["caddy", "haproxy", "both"], default="both")
    parser.add_argument("--only", choices=["hang", "kill"], help="one fault (no baseline)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario")
    parser.add_argument(
        "--upstream-timeout", type=float, help="instead of the default (30 s): the trade-off"
    )
    args = parser.parse_args()
    options = {} if args.upstream_timeout is None else {"upstream_timeout": args.upstream_timeout}
    kinds = ["caddy", "haproxy"] if args.router == "both" else [args.router]
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} cpu, load {os.getloadavg()}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for kind in kinds:
        plan = [
            ("none", args.rate),
            ("hang", args.rate),
            ("none", args.crash_rate),
            ("kill", args.crash_rate),
        ]
        for fault, rate in [(f, r) for f, r in plan if args.only in (None, f)]:
            for _ in range(args.repeat):
                print(await scenario(kind, fault, rate, args.seconds, options), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
