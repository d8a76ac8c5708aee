"""Caddy router and request stream: what they cost per request.

1. Stream -> stats, per event: ``parse_access_entry`` + ``RequestStats.record`` on real access-log
   lines, against the baseline ``json.loads`` of the same line (the part no design can avoid).
   Also the memory of a full 15-minute ring at 500 requests/s, and one ``snapshot`` over it.
2. Proxy: the same closed-loop client (aiohttp, keep-alive, ``--concurrency`` workers) against a
   tiny aiohttp upstream in its own process, directly (baseline) and through CaddyRouter with
   the request stream consumed into RequestStats (in the client's process, as in the agent);
   requests/s, p50/p99, and whether every request produced an event.
3. ``apply()`` (a full config reload through the admin socket): median and max over 20; then a
   reload storm (``--storm`` reloads, default 100, 30 ms apart, moving traffic between two
   upstreams) under the same keep-alive client loops, counting failed requests by reason.

    .venv/bin/python benchmarks/bench_router.py [--requests 4000] [--concurrency 8] [--storm 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import aiohttp

from nonstop.drivers.metrics import RequestStats
from nonstop.drivers.router.access_log import parse_access_entry
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream
from nonstop.drivers.router.caddy import CaddyRouter
from nonstop.drivers.router.settings import RouterSettings

LINE = (
    '{"level":"info","ts":%.6f,"logger":"http.log.access.nonstop","msg":"handled request",'
    '"bytes_read":0,"duration":%.9f,"size":7,"status":200,"upstream_status":200,'
    '"upstream":"127.0.0.1:18081"}'
)


def bench_stream(events: int) -> None:
    lines = [
        (LINE % (1_000.0 + i / 500, 0.0005 + (i % 97) / 10_000)).encode() for i in range(events)
    ]
    start = time.perf_counter()
    for line in lines:
        json.loads(line)
    baseline = time.perf_counter() - start

    stats = RequestStats()
    stats.observe_table(RouteTable((Upstream("a", "v1", "127.0.0.1:18081", 1),)))
    start = time.perf_counter()
    for line in lines:
        event = parse_access_entry(line)
        assert event is not None
        stats.record(event)
    ours = time.perf_counter() - start

    rnd = random.Random(1)
    events_15min = [  # 15 minutes at 500 requests/s, log-normal latency around 3 ms
        RequestEvent(5_000.0 + i / 500, "127.0.0.1:18081", 200, rnd.lognormvariate(1.0, 0.6))
        for i in range(500 * 900)
    ]
    tracemalloc.start()
    full = RequestStats()
    full.observe_table(RouteTable((Upstream("a", "v1", "127.0.0.1:18081", 1),)))
    for event in events_15min:
        full.record(event)
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    start = time.perf_counter()
    m = full.snapshot("v1", 5_000.0, 5_900.0)
    snap = time.perf_counter() - start

    print(f"stream -> stats, {events} events")
    print(f"  json.loads only (baseline): {baseline / events * 1e6:6.2f} us/event")
    print(f"  parse + RequestStats.record: {ours / events * 1e6:6.2f} us/event")
    print(f"  ratio ours / baseline: {ours / baseline:.2f}x")
    print(f"  at 500 req/s: {500 * ours / events * 100:.2f} % of one core")
    print(f"  a full 900 s ring at 500 req/s holds {memory / 1e6:.1f} MB")
    print(f"  snapshot over the whole 900 s ring ({m.requests} requests): {snap * 1000:.1f} ms")


UPSTREAM = """
import sys
from aiohttp import web

async def answer(_request):
    return web.Response(text="ok")

app = web.Application()
app.router.add_get("/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def upstream(script: str = UPSTREAM) -> tuple[subprocess.Popen[bytes], str]:
    """A tiny aiohttp upstream in its own process, so it does not share the client's loop."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", script, str(port)])
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.02)
            continue
        return proc, f"127.0.0.1:{port}"
    proc.kill()
    raise SystemExit("the upstream did not start")


async def closed_loop(address: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(count: int) -> None:
            for _ in range(count):
                t0 = time.perf_counter()
                async with session.get(f"http://{address}/") as response:
                    await response.read()
                    assert response.status == 200
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
        return time.perf_counter() - start, latencies


async def reload_storm(
    router: CaddyRouter, first: str, second: str, concurrency: int, reloads: int
) -> tuple[int, list[str], float]:
    """Keep-alive load while the table changes every 30 ms: each reload starts a new Caddy
    server and shuts the old one down gracefully. Returns (ok, failures, seconds)."""
    ok, failed = 0, []
    done = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker() -> None:
            nonlocal ok
            while not done.is_set():
                try:
                    async with s.get(f"http://{router.listen}/") as response:
                        body = await response.read()
                    if response.status == 200:
                        ok += 1
                    else:
                        failed.append(f"{response.status} {body[:60]!r}")
                except aiohttp.ClientError as exc:
                    failed.append(repr(exc))

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        start = time.perf_counter()
        for i in range(reloads):
            table = (Upstream("a", "v1", first, i % 3), Upstream("b", "v2", second, 1 + i % 2))
            await router.apply(RouteTable(table))
            await asyncio.sleep(0.03)
        took = time.perf_counter() - start
        done.set()
        await asyncio.gather(*workers)
    return ok, failed, took


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


async def bench_proxy(
    address: str, other: str, requests: int, concurrency: int, storm_reloads: int
) -> None:
    state = Path(tempfile.mkdtemp(prefix="nsb-", dir="/tmp"))
    router = CaddyRouter(state, RouterSettings(listen=f"127.0.0.1:{free_port()}", drain_timeout=5))
    await router.start()
    try:
        routes = RouteTable((Upstream("a", "v1", address, 1),))
        await router.apply(routes)
        stats = RequestStats()
        stats.observe_table(routes)
        consumer = asyncio.create_task(stats.consume(router.events()))
        await closed_loop(address, 200, concurrency)  # warm both paths
        await closed_loop(router.listen, 200, concurrency)
        direct, direct_lat = await closed_loop(address, requests, concurrency)
        proxied, proxied_lat = await closed_loop(router.listen, requests, concurrency)
        sent = 200 + requests
        for _ in range(500):
            if sum(stats.totals()["v1"].status.values()) >= sent:
                break
            await asyncio.sleep(0.01)
        counted = sum(stats.totals()["v1"].status.values())
        dropped = router.stream.dropped
        consumer.cancel()  # from here on the queue fills up and drops: nobody reads it

        reloads = []
        for i in range(20):
            weight = 1 + i % 2
            t0 = time.perf_counter()
            await router.apply(RouteTable((Upstream("a", "v1", address, weight),)))
            reloads.append(time.perf_counter() - t0)
        storm = await reload_storm(router, address, other, concurrency, storm_reloads)
    finally:
        await router.stop()
        shutil.rmtree(state, ignore_errors=True)

    n = requests // concurrency * concurrency
    print(f"proxy, {n} requests, {concurrency} workers (caddy {router.version})")
    for name, took, lat in (
        ("direct (baseline)", direct, direct_lat),
        ("via caddy", proxied, proxied_lat),
    ):
        p50, p99 = pct(lat, 50), pct(lat, 99)
        print(f"  {name:18} {n / took:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    print(f"  throughput via caddy / direct: {direct / proxied:.2f}")
    print(f"  events counted {counted} of {sent} requests; dropped {dropped}")
    print(
        f"apply() reload: median {statistics.median(reloads) * 1000:.1f} ms, "
        f"max {max(reloads) * 1000:.1f} ms over {len(reloads)}"
    )
    ok, failed, took = storm
    print(
        f"reload storm: {storm_reloads} reloads in {took:.1f} s moving traffic between two "
        f"upstreams under {concurrency} keep-alive loops: {ok} requests ok, {len(failed)} failed"
    )
    for reason, count in Counter(failed).most_common(5):
        print(f"  {count} x {reason}")


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return f"{os.cpu_count()} cpus, {model}, Python {platform.python_version()} ({sys.executable})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--storm", type=int, default=100, help="reloads in the reload storm")
    args = parser.parse_args()
    print(machine())
    bench_stream(args.events)
    proc, address = upstream()
    other_proc, other = upstream()
    try:
        asyncio.run(bench_proxy(address, other, args.requests, args.concurrency, args.storm))
    finally:
        for process in (proc, other_proc):
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
