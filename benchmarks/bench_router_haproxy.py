"""Caddy and HAProxy routers side by side, in one run, with benchmarks/bench_router.py's client,
upstreams and reload storm: closed-loop keep-alive throughput direct (baseline) and via each
router, events counted, apply() latency, and N table changes 30 ms apart under 8 keep-alive loops.

    .venv/bin/python benchmarks/bench_router_haproxy.py [changes]
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_router as br

from nonstop.drivers.metrics import RequestStats
from nonstop.drivers.router.base import RouteTable, Upstream
from nonstop.drivers.router.registry import ROUTERS
from nonstop.drivers.router.settings import RouterSettings


async def one(kind: str, a: str, b: str, requests: int, workers: int, changes: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="nsb-", dir="/tmp"))
    settings = RouterSettings(listen=f"127.0.0.1:{br.free_port()}", drain_timeout=5)
    router = ROUTERS[kind](state, settings)
    await router.start()
    try:
        routes = RouteTable((Upstream("a", "v1", a, 1),))
        await router.apply(routes)
        stats = RequestStats()
        stats.observe_table(routes)
        consumer = asyncio.create_task(stats.consume(router.events()))
        await br.closed_loop(a, 200, workers)
        await br.closed_loop(router.listen, 200, workers)
        direct, dlat = await br.closed_loop(a, requests, workers)
        proxied, plat = await br.closed_loop(router.listen, requests, workers)
        for _ in range(500):
            if sum(stats.totals()["v1"].status.values()) >= 200 + requests:
                break
            await asyncio.sleep(0.01)
        counted = sum(stats.totals()["v1"].status.values())
        consumer.cancel()
        applies = []
        for i in range(20):
            t0 = time.perf_counter()
            await router.apply(RouteTable((Upstream("a", "v1", a, 1 + i % 2),)))
            applies.append(time.perf_counter() - t0)
        ok, failed, took = await br.reload_storm(router, a, b, workers, changes)  # type: ignore[arg-type]
    finally:
        await router.stop()
        shutil.rmtree(state, ignore_errors=True)
    n = requests // workers * workers
    print(f"{kind} {router.version}: {n} requests, {workers} workers")

    def line(rate: float, lat: list[float]) -> str:
        return f"{rate:7.0f} req/s p50 {br.pct(lat, 50):5.2f} p99 {br.pct(lat, 99):5.2f} ms"

    median_ms, max_ms = statistics.median(applies) * 1000, max(applies) * 1000
    print(f"  direct (baseline) {line(n / direct, dlat)}")
    print(f"  via {kind:8}      {line(n / proxied, plat)}  ratio {direct / proxied:.2f}")
    print(f"  events counted {counted} of {200 + requests}")
    print(f"  apply(): median {median_ms:.1f} ms max {max_ms:.1f} ms over 20")
    print(
        f"  storm: {changes} changes in {took:.1f} s under {workers} keep-alive loops: "
        f"{ok} ok, {len(failed)} failed"
    )
    for reason, count in Counter(failed).most_common(3):
        print(f"    {count} x {reason}")


def main() -> None:
    changes = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print(br.machine())
    p1, a = br.upstream()
    p2, b = br.upstream()
    try:
        for kind in ("caddy", "haproxy"):
            asyncio.run(one(kind, a, b, 4000, 8, changes))
    finally:
        for proc in (p1, p2):
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
