"""The local runtime and the sample app on this machine: start-to-ready time and throughput.

    .venv/bin/python benchmarks/bench_runtime.py                  # about 40 seconds
    .venv/bin/python benchmarks/bench_runtime.py --duration 3 --starts 5

1. Start-to-ready: LocalRuntime.start() of the sample app, then wait_ready() (probing /health
   every 10 ms) until it passes; median and max of --starts runs. Baseline in the same run: the
   time to spawn and reap ``python -c pass`` (the interpreter's own start-up).
2. Throughput: wrk (closed loop, 1 thread, 8 connections, as fast as it can) against the sample
   app's ``/`` and, as the baseline, against a bare stdlib ThreadingHTTPServer that answers "ok"
   with no metrics, no knobs (the floor of a threaded stdlib server here).
3. The 500 req/s target: hey at a fixed rate (10 workers x 50 req/s) for --duration seconds
   against the sample app; prints the achieved rate, status codes and latency percentiles.

wrk and hey share the machine's cores with the server, so read the numbers as a comparison
made in one run, not as absolute capacities.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from nonstop.config.schema import HealthConfig
from nonstop.drivers.runtime.base import InstanceHandle, InstanceSpec
from nonstop.drivers.runtime.health import wait_ready
from nonstop.drivers.runtime.local import LocalRuntime

BARE_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def machine() -> str:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"nproc={os.cpu_count()} cpu={cpu!r} python={platform.python_version()}"


def running(runtime: LocalRuntime, handle: InstanceHandle) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await runtime.status(handle)).running

    return check


async def start_to_ready(runtime: LocalRuntime, cwd: str, runs: int) -> list[float]:
    health = HealthConfig(interval=0.01, timeout=1.0)
    times = []
    for i in range(runs):
        spec = InstanceSpec(
            f"bench-{i}",
            "bench",
            f"{sys.executable} -m nonstop.demo.sampleapp --port {{port}}",
            cwd,
        )
        began = time.perf_counter()
        handle = await runtime.start(spec)
        reason = await wait_ready(handle, health, None, running(runtime, handle))
        times.append(time.perf_counter() - began)
        assert reason is None, reason
        await runtime.stop(handle, "SIGTERM", 5.0)
    return times


def interpreter_start(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - began)
    return times


def wrk(address: str, duration: float) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{duration:g}s", f"http://{address}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def hey(address: str, duration: float, rate: int) -> str:
    workers = 10
    out = subprocess.run(
        [
            "hey",
            "-z",
            f"{duration:g}s",
            "-c",
            str(workers),
            "-q",
            str(rate // workers),
            f"http://{address}/",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wanted = []
    for line in out.splitlines():
        if re.match(r"\s+(Requests/sec|Total|Slowest|Average):", line) or re.match(
            r"\s+(50|90|99)(\.00)?% in", line
        ):
            wanted.append(line.strip())
        if re.match(r"\s+\[\d{3}\]", line):
            wanted.append("status " + line.strip())
    return "\n    ".join(wanted)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--rate", type=int, default=500)
    args = parser.parse_args()
    print(machine())

    with tempfile.TemporaryDirectory() as tmp:
        runtime = LocalRuntime(log_dir=Path(tmp) / "logs")
        ready = await start_to_ready(runtime, tmp, args.starts)
        bare = interpreter_start(args.starts)
        r_med, b_med = statistics.median(ready), statistics.median(bare)
        print(f"\nstart-to-ready (sample app, {args.starts} runs): median {r_med * 1000:.0f} ms, "
              f"max {max(ready) * 1000:.0f} ms")  # fmt: skip
        print(f"baseline python -c pass: median {b_med * 1000:.0f} ms; ratio {r_med / b_med:.2f}x")

        if not (shutil.which("wrk") and shutil.which("hey")):
            print("\nwrk or hey not installed: skipping throughput (make bench installs them)")
            return
        app = await runtime.start(
            InstanceSpec("bench-app", "bench",
                         f"{sys.executable} -m nonstop.demo.sampleapp --port {{port}}", tmp)
        )  # fmt: skip
        script = Path(tmp) / "bare.py"
        script.write_text(BARE_SERVER)
        base = await runtime.start(
            InstanceSpec("bench-bare", "bare", f"{sys.executable} {script} {{port}}", tmp)
        )
        try:
            for handle in (app, base):
                health = HealthConfig(path="/", interval=0.01)
                assert await wait_ready(handle, health, None, running(runtime, handle)) is None
            app_rps = wrk(app.address, args.duration)
            bare_rps = wrk(base.address, args.duration)
            print(f"\nwrk -t1 -c8 {args.duration:g}s: sample app {app_rps:.0f} req/s, "
                  f"bare ThreadingHTTPServer {bare_rps:.0f} req/s; "
                  f"ratio {app_rps / bare_rps:.2f}x")  # fmt: skip
            print(f"\nhey at {args.rate} req/s for {args.duration:g}s against the sample app:")
            print("    " + hey(app.address, args.duration, args.rate))
        finally:
            for handle in (app, base):
                await _stop(runtime, handle)


async def _stop(runtime: LocalRuntime, handle: InstanceHandle) -> None:
    await runtime.stop(handle, "SIGTERM", 5.0)


if __name__ == "__main__":
    asyncio.run(main())
