"""Every router kind in one run: routing changes under keep-alive load.

For each kind in the registry (Caddy, HAProxy, nginx), against the same two upstreams (tiny
aiohttp servers in their own processes, each answering ``/`` and echoing on ``/ws``):

1. Quiet: ``--loops`` closed-loop keep-alive clients for ``--quiet`` seconds, no change: the
   baseline p99 of that router in this run.
2. Changes: the same clients while the table changes ``--changes`` times (weights of A and B
   move, both stay in the pool, ``--gap`` seconds between changes), with ``--websockets``
   WebSocket connections to A open across all of them, each sending a message every second
   and waiting for its echo.

Reported per kind: requests, failed requests (a 5xx or no response; aiohttp itself silently
resends a request once when a reused keep-alive connection turns out closed, nothing more), of
which connection resets (closed or reset with no response byte), failed after one more resend of
such a request (what a client that retries idempotent requests sees), p99 quiet and during the
changes, the changes' apply() median and max, the router's RSS (every process of it, workers
shutting down included) and how many processes that is, before the changes, after them with
the WebSockets still open, and once the WebSockets closed, and how many WebSockets still echo
after the last change.

``--late-websockets N`` opens N more WebSockets while the changes run, one every
``changes / N`` changes, each held open to the end: a reloading router's old configuration
(Caddy) or old worker (nginx) that holds one of them stays alive until it closes, so this is
what a router carries when clients keep connecting between changes.

    .venv/bin/python benchmarks/bench_routers.py [--changes 1000] [--loops 8] [--websockets 50]
        [--late-websockets 0] [--kinds caddy,haproxy,nginx] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_router as br

from nonstop.drivers.metrics import RequestStats
from nonstop.drivers.router.base import RouteTable, Upstream
from nonstop.drivers.router.managed import ManagedRouter
from nonstop.drivers.router.registry import ROUTERS
from nonstop.drivers.router.settings import RouterSettings

UPSTREAM = """
import sys
from aiohttp import WSMsgType, web

async def answer(_request):
    return web.Response(text="ok")

async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
    return ws

app = web.Application()
app.router.add_get("/ws", echo)
app.router.add_get("/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


@dataclass
class Outcome:
    kind: str
    version: str
    changes: int
    changes_seconds: float
    apply_ms: tuple[float, float]
    """``apply()`` median and max: until the router serves the new table (its probe says so)."""
    requests: int
    """Sent during the changes."""
    failed: int
    """A 5xx, or no response at all."""
    resets: int
    """Of the failed: closed or reset before any response byte (a client may resend these)."""
    failed_after_resend: int
    reasons: dict[str, int]
    p99_ms: tuple[float, float]
    """Quiet (before the changes, same router, same clients: the baseline), during the changes."""
    rss_mib: tuple[float, float, float]
    """Every process of the router (old workers still draining included): before the changes,
    after them (the WebSockets still open), once the WebSockets closed."""
    processes: tuple[int, int, int]
    """How many processes those are, at the same three moments."""
    websockets: int
    websockets_alive: int
    """Still echoing after the last change."""
    late_websockets: int
    late_websockets_alive: int
    """Of those opened during the changes, still echoing after the last change."""
    websockets_lost_after_s: float | None
    """Median seconds from the first change to the loss of a WebSocket that was lost."""


def is_reset(exc: BaseException) -> bool:
    """A connection closed or reset before any response byte: the request may be resent."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE)


class Clients:
    """``loops`` closed-loop keep-alive clients; each failure is recorded by reason."""

    def __init__(self, url: str, loops: int) -> None:
        self.url, self.loops = url, loops
        self.latencies: list[float] = []
        self.reasons: Counter[str] = Counter()
        self.requests = self.resets = self.after_resend = 0
        self._stop = asyncio.Event()

    async def run_until(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=self.loops)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(self._loop(session, stop) for _ in range(self.loops)))

    async def _loop(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.requests += 1
            t0 = time.perf_counter()
            reason = await self._get(session)
            if reason is None:
                self.latencies.append(time.perf_counter() - t0)
                continue
            self.reasons[reason] += 1
            if reason.startswith("reset"):
                self.resets += 1
                if await self._get(session) is not None:
                    self.after_resend += 1

    async def _get(self, session: aiohttp.ClientSession) -> str | None:
        try:
            async with session.get(self.url) as response:
                await response.read()
                return None if response.status < 500 else f"status {response.status}"
        except (aiohttp.ClientError, OSError) as exc:
            return f"reset: {type(exc).__name__}" if is_reset(exc) else type(exc).__name__

    def p99(self) -> float:
        return br.pct(self.latencies, 99) if self.latencies else 0.0


async def hold_websockets(url: str, count: int, stop: asyncio.Event) -> list[float | None]:
    """``count`` WebSockets, each echoing a message a second until ``stop``: for each, None if it
    still echoes then, else when (monotonic) it closed or missed an echo (5 s)."""
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(_one_websocket(session, url, stop, i) for i in range(count)), return_exceptions=True
        )
    return [r if r is None or isinstance(r, float) else time.monotonic() for r in results]


async def _one_websocket(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event, n: int
) -> float | None:
    async with session.ws_connect(url, autoping=True) as ws:
        sent = 0
        while True:
            sent += 1
            await ws.send_str(f"{n}:{sent}")
            message = await ws.receive(timeout=5)
            if message.type != aiohttp.WSMsgType.TEXT or message.data != f"{n}:{sent}":
                return time.monotonic()
            if stop.is_set():
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


def tree(pid: int | None) -> tuple[int, float]:
    """How many processes ``pid`` and its descendants are, and their RSS in MiB."""
    family = descendants(pid) if pid is not None else set()
    return len(family), sum(_rss_kib(p) for p in family) / 1024


def descendants(pid: int) -> set[int]:
    """``pid`` and every live process descending from it."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields_ = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields_[0] != "Z":  # a zombie holds no memory
            parents[int(stat.parent.name)] = int(fields_[1])
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    return family & set(parents) if pid in parents else set()


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tables(a: str, b: str, n: int) -> list[RouteTable]:
    """The ``n`` tables of the changes: A and B always in the pool, their weights moving."""
    return [
        RouteTable((Upstream("a", "v1", a, 1 + i % 3), Upstream("b", "v2", b, 1 + (i + 1) % 2)))
        for i in range(n)
    ]


async def measure(kind: str, a: str, b: str, args: argparse.Namespace) -> Outcome:
    state = Path(tempfile.mkdtemp(prefix="nsr-", dir="/tmp"))
    settings = RouterSettings(listen=f"127.0.0.1:{br.free_port()}")  # default drain timeout
    router = ROUTERS[kind](state, settings)
    await router.start()
    try:
        return await _measure(router, kind, a, b, args)
    finally:
        await router.stop()
        shutil.rmtree(state, ignore_errors=True)


async def _measure(
    router: ManagedRouter, kind: str, a: str, b: str, args: argparse.Namespace
) -> Outcome:
    first = tables(a, b, 1)[0]
    await router.apply(first)
    stats = RequestStats()
    stats.observe_table(first)
    consumer = asyncio.create_task(stats.consume(router.events()))  # as the agent does
    quiet = Clients(f"http://{router.listen}/", args.loops)
    stop = asyncio.Event()
    load = asyncio.create_task(quiet.run_until(stop))
    await asyncio.sleep(args.quiet)
    stop.set()
    await load
    before = tree(router.pid)
    clients, changed = await _changes(router, a, b, args)
    consumer.cancel()
    closed = await _settled(router.pid)
    return Outcome(
        kind=kind,
        version=router.version or "",
        requests=clients.requests,
        failed=sum(clients.reasons.values()),
        resets=clients.resets,
        failed_after_resend=clients.after_resend,
        reasons=dict(clients.reasons.most_common(5)),
        p99_ms=(quiet.p99(), clients.p99()),
        processes=(before[0], changed.pop("processes_after"), closed[0]),
        rss_mib=(before[1], changed.pop("rss_after"), closed[1]),
        **changed,
    )


async def _settled(pid: int | None) -> tuple[int, float]:
    """:func:`tree` once the processes stopped exiting after the WebSockets closed (its count
    unchanged for 2 s), or after 30 s."""
    last, seen = tree(pid), time.monotonic()
    deadline = seen + 30
    while time.monotonic() < deadline and time.monotonic() - seen < 2:
        await asyncio.sleep(0.25)
        now = tree(pid)
        if now[0] != last[0]:
            seen = time.monotonic()
        last = now
    return last


async def _changes(
    router: ManagedRouter, a: str, b: str, args: argparse.Namespace
) -> tuple[Clients, dict[str, Any]]:
    """The changes under load with the WebSockets open: the clients, and what the changes and
    the WebSockets measured (Outcome's fields, and the router's processes after the changes)."""
    # Only A is routed while the WebSockets connect, so every one of them is on A.
    await router.apply(RouteTable((Upstream("a", "v1", a, 1),)))
    stop, ws_stop = asyncio.Event(), asyncio.Event()
    url = f"ws://{router.listen}/ws"
    sockets = asyncio.create_task(hold_websockets(url, args.websockets, ws_stop))
    await asyncio.sleep(1.0)
    clients = Clients(f"http://{router.listen}/", args.loops)
    load = asyncio.create_task(clients.run_until(stop))
    async with aiohttp.ClientSession() as session:
        late: list[asyncio.Task[float | None]] = []
        every = max(1, args.changes // args.late_websockets) if args.late_websockets else 0
        applies: list[float] = []
        start, start_monotonic = time.perf_counter(), time.monotonic()
        for n, table in enumerate(tables(a, b, args.changes)):
            if every and n % every == 0 and len(late) < args.late_websockets:
                late.append(asyncio.create_task(_one_websocket(session, url, ws_stop, 1000 + n)))
            t0 = time.perf_counter()
            await router.apply(table)
            applies.append(time.perf_counter() - t0)
            await asyncio.sleep(args.gap)
        took = time.perf_counter() - start
        await asyncio.sleep(1.0)
        processes, rss = tree(router.pid)
        stop.set()
        ws_stop.set()
        await load
        lost = [at - start_monotonic for at in await sockets if at is not None]
        late_done = await asyncio.gather(*late, return_exceptions=True)
    return clients, {
        "changes": args.changes,
        "changes_seconds": took,
        "apply_ms": (statistics.median(applies) * 1000, max(applies) * 1000),
        "websockets": args.websockets,
        "websockets_alive": args.websockets - len(lost),
        "websockets_lost_after_s": statistics.median(lost) if lost else None,
        "late_websockets": len(late),
        "late_websockets_alive": sum(1 for r in late_done if r is None),
        "processes_after": processes,
        "rss_after": rss,
    }


def report(out: Outcome) -> str:
    return (
        f"{out.kind} {out.version}\n"
        f"  {out.changes} changes in {out.changes_seconds:.1f} s; apply() median "
        f"{out.apply_ms[0]:.1f} ms, max {out.apply_ms[1]:.1f} ms\n"
        f"  requests {out.requests}: failed {out.failed} (resets {out.resets}), failed after "
        f"one resend {out.failed_after_resend}; {out.reasons or ''}\n"
        f"  p99 quiet {out.p99_ms[0]:.2f} ms, during changes {out.p99_ms[1]:.2f} ms\n"
        f"  router processes / RSS: before {out.processes[0]} / {out.rss_mib[0]:.1f} MiB, after "
        f"the changes {out.processes[1]} / {out.rss_mib[1]:.1f} MiB, once the websockets closed "
        f"{out.processes[2]} / {out.rss_mib[2]:.1f} MiB\n"
        f"  late websockets alive: {out.late_websockets_alive} of {out.late_websockets}\n"
        f"  websockets alive after the changes: {out.websockets_alive} of {out.websockets}"
        + (
            f"; the others lost {out.websockets_lost_after_s:.1f} s (median) after the first"
            if out.websockets_lost_after_s is not None
            else ""
        )
    )


def upstream() -> tuple[subprocess.Popen[bytes], str]:
    return br.upstream(UPSTREAM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--gap", type=float, default=0.03, help="seconds between changes")
    parser.add_argument("--loops", type=int, default=8, help="keep-alive client loops")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds of the baseline")
    parser.add_argument("--websockets", type=int, default=50)
    parser.add_argument(
        "--late-websockets", type=int, default=0, help="opened during the changes, spread evenly"
    )
    parser.add_argument("--kinds", default=",".join(ROUTERS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    unknown = [k for k in kinds if k not in ROUTERS]
    if unknown:
        parser.error(f"--kinds: unknown router kind {unknown[0]!r}; known: {', '.join(ROUTERS)}")
    print(br.machine(), flush=True)
    (p1, a), (p2, b) = upstream(), upstream()
    results = []
    try:
        for kind in kinds:
            results.append(asyncio.run(measure(kind, a, b, args)))
            print(report(results[-1]), flush=True)
    finally:
        for proc in (p1, p2):
            proc.terminate()
            proc.wait()
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
