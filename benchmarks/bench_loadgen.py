"""How fast can nonstop's open-model load generator go on this machine, next to wrk and hey?

    .venv/bin/python benchmarks/bench_loadgen.py                 # about 2 minutes
    .venv/bin/python benchmarks/bench_loadgen.py --duration 3 --rates 250,500,1000

1. Starts a trivial keep-alive HTTP server (plain asyncio, fixed 2-byte body) in its own process.
2. Runs our generator, in its own process, at increasing constant rates for --duration seconds
   each, until a rate is not sustained. A rate is *sustained* when every scheduled request was
   sent (zero not_sent) and ok and the achieved rate is within 1% of the target; it is also *on
   schedule* when the p99 of the send lag (due time -> actual send) is at most 5 ms there and at
   every lower rate. Prints the highest rate of each kind, p99 latency from the scheduled and
   the sent time, and CPU use.
3. Runs hey at the same rates (-c 10 workers, -q rate/10 each: closed loop with a rate limit)
   and wrk (closed loop, as fast as it can: the ceiling of this server on this machine).

Both tools and our generator share the machine's cores with the server, so read the numbers as
a comparison made in one run, not as absolute capacities.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

ON_SCHEDULE_P99_LAG_MS = 5.0
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class _Http(asyncio.Protocol):
    """Answers every request head it sees with RESPONSE; keep-alive and pipelining."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * count)


def serve(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Http, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def generate(url: str, rate: float, duration: float) -> None:
    """Child process: one run of our generator; prints the report and CPU seconds as JSON."""
    from nonstop.loadgen import run_load

    before = resource.getrusage(resource.RUSAGE_SELF)
    report = asyncio.run(run_load(url, rate, duration=duration, connections=100, timeout=5))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"report": report.to_dict(), "cpu_seconds": cpu}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


def run_ours(url: str, rate: float, duration: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--generate", url, str(rate), str(duration)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out)
    report = data["report"]
    sustained = (
        report["counts"]["not_sent"] == 0
        and report["passed"]
        and report["achieved_rps"] >= 0.99 * rate
    )
    return {
        "tool": "nonstop",
        "target": rate,
        "achieved": report["achieved_rps"],
        "p50_sched": report["latency_ms"]["from_scheduled"]["p50"],
        "p99_sched": report["latency_ms"]["from_scheduled"]["p99"],
        "p99_sent": report["latency_ms"]["from_sent"]["p99"],
        "p99_send_lag": report["send_lag_ms"]["p99"],
        "not_sent": report["counts"]["not_sent"],
        "failed": report["failed"],
        "cpu_pct": round(100 * data["cpu_seconds"] / duration, 1),
        "sustained": sustained,
        "on_schedule": sustained and report["send_lag_ms"]["p99"] <= ON_SCHEDULE_P99_LAG_MS,
    }


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "secs": 1000.0}[unit]


def run_hey(url: str, rate: float, duration: float) -> dict[str, Any]:
    workers = 10
    out = subprocess.run(
        ["hey", "-z", f"{duration}s", "-c", str(workers), "-q", str(rate / workers), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    return {
        "tool": "hey",
        "target": rate,
        "achieved": float(rps.group(1)) if rps else 0.0,
        "p99_sent": _ms(p99.group(1), "s") if p99 else None,
    }


def run_wrk(url: str, duration: float) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", "-c10", f"-d{int(duration)}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    return {
        "tool": "wrk",
        "achieved": float(rps.group(1)) if rps else 0.0,
        "p99_sent": _ms(p99.group(1), p99.group(2)) if p99 else None,
    }


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per rate")
    parser.add_argument("--rates", default="250,500,1000,2000,4000,6000,8000,10000,12000,16000")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.generate:
        url, rate, duration = args.generate
        generate(url, float(rate), float(duration))
        return

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/"
        print(f"machine: {machine()}")
        print(f"server: plain asyncio keep-alive server, own process, {url}")
        rates = [float(r) for r in args.rates.split(",")]
        ours = []
        for rate in rates:
            row = run_ours(url, rate, args.duration)
            ours.append(row)
            print(json.dumps(row))
            if not row["sustained"]:
                break
        sustained = [r for r in ours if r["sustained"]]
        # on schedule at this rate and at every lower one (noise from neighbours can make one
        # step miss while a higher one passes; the contiguous run is the honest claim)
        on_schedule = list(itertools.takewhile(lambda r: r["on_schedule"], ours))
        tools = []
        if shutil.which("hey"):
            for rate in rates[: len(ours)]:
                row = run_hey(url, rate, args.duration)
                tools.append(row)
                print(json.dumps(row))
        wrk = run_wrk(url, args.duration) if shutil.which("wrk") else None
        if wrk:
            print(json.dumps(wrk))
        print()
        for label, rows in (("sustained (zero not_sent)", sustained), ("on schedule", on_schedule)):
            if not rows:
                print(f"nonstop: no rate {label}")
                continue
            best = max(rows, key=lambda r: r["target"])
            line = (
                f"nonstop: highest rate {label}: {best['target']:g} rps, p99 "
                f"{best['p99_sched']} ms from schedule, {best['p99_sent']} ms from send, "
                f"{best['cpu_pct']}% of one core"
            )
            if wrk and wrk["achieved"]:
                line += f"; {best['target'] / wrk['achieved']:.3f} of wrk's closed-loop ceiling"
            print(line)
        if wrk:
            print(f"wrk: closed-loop ceiling {wrk['achieved']:g} rps, p99 {wrk['p99_sent']} ms")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
