"""The flag SDK in use: evaluation rate through `nonstop.flags.Client` against the official
UnleashClient on the same flags, and how long a kill switch takes to reach each of them.

A flag server (the agent's FlagService: admin API on a unix socket, Unleash client API on
TCP) runs in a child process; every client connects to it over real sockets.

1. Evaluations per second of ``is_enabled`` (metrics counting on in both), for three
   flags, best of several batches over 1,000 users; the bare engine is the baseline that
   shows the SDK's own overhead (context defaults, metrics counting, exception guard).
2. Kill switch: the flag is disabled through the admin API (what ``nonstop flags disable``
   sends) and each connected client is watched until it answers False: nonstop's Client
   on its SSE stream (refresh interval an hour, so only the stream counts), nonstop's
   Client polling every 1 s, UnleashClient polling every 1 s (its smallest interval), and
   UnleashClient in its streaming mode. Median and max over the trials.

    .venv/bin/python benchmarks/bench_flags_sdk.py            # about a minute
    .venv/bin/python benchmarks/bench_flags_sdk.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nonstop.agent.client import AgentClient
from nonstop.agent.paths import Paths
from nonstop.flags import Client, FlagEngine

FLAGS: list[dict[str, Any]] = [
    {"name": "simple", "enabled": True, "strategies": [{"name": "default"}]},
    {
        "name": "rollout",
        "enabled": True,
        "strategies": [
            {
                "name": "flexibleRollout",
                "parameters": {"rollout": "50", "stickiness": "userId", "groupId": "rollout"},
            }
        ],
    },
    {
        "name": "constraints",
        "enabled": True,
        "strategies": [
            {
                "name": "flexibleRollout",
                "parameters": {"rollout": "100", "stickiness": "default", "groupId": "c"},
                "constraints": [
                    {"contextName": "environment", "operator": "IN", "values": ["production"]},
                    {"contextName": "plan", "operator": "IN", "values": ["pro", "team"]},
                    {"contextName": "version", "operator": "SEMVER_GTE", "value": "2.3.0"},
                ],
            }
        ],
    },
    {"name": "kill", "enabled": True, "strategies": []},
]
DOCUMENT = {"version": 1, "features": FLAGS}


# ------------------------------------------------------------------------- server process


def serve(root: Path, port: int) -> None:
    """Child process: the FlagService as the agent mounts it, until SIGTERM."""
    from aiohttp import web

    from nonstop.agent.api import auth_middleware
    from nonstop.config.schema import FlagsConfig
    from nonstop.flags.service import FlagService

    async def main() -> None:
        paths = Paths(root)
        token = paths.read_or_create_token()
        service = FlagService(
            paths.state,
            FlagsConfig(listen=f"127.0.0.1:{port}"),
            lambda since: (0, 0),
            lambda level, message: None,
        )
        app = web.Application(middlewares=[auth_middleware(token, frozenset())])
        app.add_routes(service.admin_routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.UnixSite(runner, str(paths.socket)).start()
        await service.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await service.close()
        await runner.cleanup()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------- measurements


def contexts(count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "userId": f"user-{i}",
            "environment": "production",
            "properties": {"plan": rng.choice(["free", "pro", "team"]), "version": "2.4.1"},
        }
        for i in range(count)
    ]


def rates(
    checks: dict[str, tuple[Callable[[str, dict[str, Any]], bool], int]],
    name: str,
    ctxs: list[Any],
    batches: int,
) -> dict[str, float]:
    """Best evaluations per second of each check, over ``batches`` rounds in which every
    check runs one batch (of its own size) in turn, so load from elsewhere on the machine
    hits them alike."""
    best = dict.fromkeys(checks, 0.0)
    n = len(ctxs)
    for _ in range(batches):
        for label, (check, size) in checks.items():
            start = time.perf_counter()
            for i in range(size):
                check(name, ctxs[i % n])
            best[label] = max(best[label], size / (time.perf_counter() - start))
    return best


def kill_switch_trials(
    admin: AgentClient, clients: dict[str, Callable[[str, dict[str, Any]], bool]], trials: int
) -> dict[str, list[float]]:
    """Seconds from the start of the disable request until each client answers False."""
    ctx = {"userId": "1"}
    seen: dict[str, list[float]] = {name: [] for name in clients}
    for trial in range(trials):
        admin.call("POST", "/v1/flags/kill/enable")
        for name, check in clients.items():
            wait_until(lambda check=check: check("kill", ctx), 30, f"{name} sees kill on")
        time.sleep(random.uniform(0.1, 1.1))  # land anywhere in the polling period
        done: dict[str, float] = {}

        def watch(
            name: str,
            check: Callable[[str, dict[str, Any]], bool],
            t0: float,
            done: dict[str, float],
        ) -> None:
            while check("kill", ctx):
                time.sleep(0.0005)
            done[name] = time.perf_counter() - t0

        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=watch, args=(name, check, t0, done))
            for name, check in clients.items()
        ]
        admin.call("POST", "/v1/flags/kill/disable")
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for name in clients:
            seen[name].append(done[name])
        print(
            f"  trial {trial + 1}: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in done.items())
        )
    return seen


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting until {what}")
        time.sleep(0.005)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, {cpu}, Python {platform.python_version()}, load {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke test")
    parser.add_argument("--serve", nargs=2, metavar=("DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]))
        return
    logging.getLogger("UnleashClient").setLevel(logging.CRITICAL)
    batches, size, trials = (2, 5_000, 3) if args.quick else (10, 50_000, 12)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        root, port = Path(tmp), free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", tmp, str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            run(root, f"http://127.0.0.1:{port}/api", batches, size, trials)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(10)


def run(root: Path, url: str, batches: int, size: int, trials: int) -> None:
    from UnleashClient import UnleashClient

    admin = AgentClient(Paths(root))
    admin.call("PUT", "/v1/flags-document", {"document": DOCUMENT})
    token = admin.call("POST", "/v1/flags-tokens", {"name": "bench"})["token"]

    streaming = Client(url, token, app_name="bench", refresh_interval=3600, metrics_interval=3600)
    polling = Client(url, token, app_name="bench", refresh_interval=1, stream=False)

    def unleash(mode: str) -> Any:
        client = UnleashClient(
            url=url,
            app_name="bench",
            instance_id=f"bench-{mode}",
            refresh_interval=1 if mode == "polling" else 3600,
            metrics_interval=3600,
            custom_headers={"Authorization": token},
            cache_directory=str(root / f"cache-{mode}"),
            experimental_mode={"type": mode},
        )
        client.initialize_client()
        return client

    unleash_polling, unleash_streaming = unleash("polling"), unleash("streaming")
    engine = FlagEngine.from_unleash(DOCUMENT)
    try:
        wait_until(lambda: streaming.is_enabled("simple"), 30, "the SDK is ready")
        wait_until(lambda: unleash_polling.is_enabled("simple"), 30, "UnleashClient is ready")
        ctxs = contexts(1000)
        print(
            f"\nis_enabled, evaluations per second (best of {batches} interleaved batches of "
            f"{size:,} calls; {size // 10:,} for UnleashClient)"
        )
        print(f"{'flag':<12} {'engine':>12} {'nonstop SDK':>12} {'UnleashClient':>14} "
              f"{'SDK/engine':>11} {'SDK/Unleash':>12}")  # fmt: skip
        for flag in ("simple", "rollout", "constraints"):
            got = rates(
                {
                    "engine": (engine.is_enabled, size),
                    "sdk": (streaming.is_enabled, size),
                    "unleash": (unleash_polling.is_enabled, size // 10),
                },
                flag,
                ctxs,
                batches,
            )
            bare, sdk, theirs = got["engine"], got["sdk"], got["unleash"]
            print(f"{flag:<12} {bare:>12,.0f} {sdk:>12,.0f} {theirs:>14,.0f} "
                  f"{sdk / bare:>10.2f}x {sdk / theirs:>11.1f}x")  # fmt: skip

        print(f"\nkill switch: disable -> client answers False ({trials} trials)")
        clients: dict[str, Callable[[str, dict[str, Any]], bool]] = {
            "nonstop-stream": streaming.is_enabled,
            "nonstop-poll-1s": polling.is_enabled,
            "unleash-poll-1s": unleash_polling.is_enabled,
            "unleash-stream": unleash_streaming.is_enabled,
        }
        seen = kill_switch_trials(admin, clients, trials)
        print(f"\n{'client':<16} {'median ms':>10} {'max ms':>9}")
        for name, values in seen.items():
            print(
                f"{name:<16} {statistics.median(values) * 1000:>10.1f} {max(values) * 1000:>9.1f}"
            )
    finally:
        streaming.close()
        polling.close()
        unleash_polling.destroy()
        unleash_streaming.destroy()


if __name__ == "__main__":
    main()
