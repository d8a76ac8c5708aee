"""What notifications and /metrics cost the agent, each against a baseline in the same run.

1. ``Notifier.notify`` (what the engine calls on a transition) with three receivers that are
   down, per call, against one event written to the store (what every transition already
   costs: a SQLite insert with synchronous=FULL).
2. One /metrics exposition with three releases of 15 minutes of traffic (100 req/s each), a
   canary in progress and 200 finished rollouts in a real store, against the request metrics
   alone (the exposition before rollout, weight and instance metrics were added).

    python benchmarks/bench_notify.py [--repeat 7]

Prints a Markdown table (median of ``--repeat`` runs, with min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nonstop.agent.metrics import exposition
from nonstop.config.load import validate_config
from nonstop.config.schema import NotifyConfig
from nonstop.drivers.metrics import RequestStats, register_request_metrics
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream
from nonstop.engine.health import Health
from nonstop.notify import notices
from nonstop.notify.deliver import Notifier
from nonstop.store import open_store

CALLS = 20_000
STATE = {"phase": "starting", "phase_started_at": 0.0}


def per_call_us(action: Any, calls: int) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        action()
    return (time.perf_counter() - began) / calls * 1e6


async def notify_cost() -> float:
    dead = [NotifyConfig(url=f"http://127.0.0.1:9/hook{i}") for i in range(3)]
    notifier = Notifier(dead, "shop", lambda level, message: None, queue_size=CALLS + 1)
    notice = notices.started(notices.RolloutRef(1, "canary", "v2", "v1"), time.time())
    return per_call_us(lambda: notifier.notify(notice), CALLS)  # the workers never run here


def event_cost(root: Path) -> float:
    store = open_store(root)
    try:
        return per_call_us(lambda: store.add_event("rollout 1: step 2/3 reached"), 500)
    finally:
        store.close()


def traffic() -> RequestStats:
    stats = RequestStats()
    releases = {"v1": "127.0.0.1:9001", "v2": "127.0.0.1:9002", "v3": "127.0.0.1:9003"}
    stats.observe_table(
        RouteTable(tuple(Upstream(f"{r}-1", r, a, 33) for r, a in releases.items()))
    )
    now = time.time()
    for second in range(900):
        for n in range(100):
            for address in releases.values():
                ts = now - 900 + second + n / 100
                stats.record(RequestEvent(ts, address, 200 if n % 50 else 503, 3.0 + n % 40))
    return stats


def state(stats: RequestStats, store: Any) -> Any:
    async def alive() -> bool:
        return True

    row = SimpleNamespace(id=3, strategy="canary", candidate="v3", stable="v2")
    active = SimpleNamespace(row=row, state=SimpleNamespace(phase="step", step=1, paused=False))
    live = {
        f"{r}-{i}": SimpleNamespace(id=f"{r}-{i}", release=r, state="ready", restarts=0)
        for r in ("v2", "v3")
        for i in range(4)
    }
    engine = SimpleNamespace(
        health=Health(),
        store=store,
        active=active,
        weights={"v2": 50, "v3": 50},
        instances=SimpleNamespace(live=live),
        router=SimpleNamespace(alive=alive),
    )
    config = validate_config({"app": {"name": "shop", "command": "x {port}"}})
    return SimpleNamespace(
        engine=engine, stats=stats, config=config, started_at=time.time(), notifier=None
    )


def old_exposition(stats: RequestStats) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    register_request_metrics(registry, stats)
    return generate_latest(registry)


def scrape_ms(agent: Any, repeat: int) -> tuple[list[float], list[float]]:
    new, old = [], []
    for _ in range(repeat):
        began = time.perf_counter()
        asyncio.run(exposition(agent))
        new.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        old_exposition(agent.stats)
        old.append((time.perf_counter() - began) * 1000)
    return new, old


def spread(values: list[float], digits: int = 2) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    notify, event = [], []
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeat):
            notify.append(asyncio.run(notify_cost()))
            event.append(event_cost(Path(root)))
    with tempfile.TemporaryDirectory() as root:
        store = open_store(Path(root))
        for n in range(200):  # the history /metrics counts rollouts from
            row = store.start_rollout("canary", f"v{n + 1}", f"v{n}", STATE, rollback=False)
            store.finish_rollout(row.id, "completed" if n % 10 else "rolled_back", "done")
        new, old = scrape_ms(state(traffic(), store), args.repeat)
        store.close()
    ratio = statistics.median(event) / statistics.median(notify)
    print(f"python {platform.python_version()}, {args.repeat} runs, median (min-max)\n")
    print("| what | result | baseline, same run | ratio |")
    print("| --- | --- | --- | --- |")
    print(
        f"| `notify()` with 3 dead receivers, per call | {spread(notify)} µs | "
        f"store event write {spread(event, 1)} µs | notify is {ratio:.0f}x cheaper |"
    )
    print(
        f"| /metrics exposition, 3 releases x 15 min at 100 req/s, canary running | "
        f"{spread(new)} ms | request metrics only {spread(old)} ms | "
        f"{statistics.median(new) / statistics.median(old):.2f}x |"
    )


if __name__ == "__main__":
    main()
