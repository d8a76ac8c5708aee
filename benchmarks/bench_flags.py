"""Flag evaluation speed: nonstop's FlagEngine against the official Unleash Python SDK.

Both evaluate the same document; the SDK (UnleashClient 6.x, which embeds the yggdrasil
engine) is bootstrapped from a dict with metrics and registration off, so no network is
involved. For each kind of flag the script times the same contexts through both, checks
that they decide the same, and prints evaluations per second and the ratio. It also
measures the memory that 10,000 compiled flags take (tracemalloc) and how long they take
to compile.

    .venv/bin/python benchmarks/bench_flags.py            # full run (about a minute)
    .venv/bin/python benchmarks/bench_flags.py --quick    # a few seconds, for a smoke test
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nonstop.flags.engine import FlagEngine

CONSTRAINTS = [
    {"contextName": "environment", "operator": "IN", "values": ["production", "staging"]},
    {"contextName": "appName", "operator": "NOT_IN", "values": ["legacy"]},
    {
        "contextName": "email",
        "operator": "STR_ENDS_WITH",
        "values": ["@example.com"],
        "caseInsensitive": True,
    },
    {"contextName": "plan", "operator": "STR_STARTS_WITH", "values": ["pro", "team"]},
    {"contextName": "seats", "operator": "NUM_GTE", "value": "5"},
    {"contextName": "version", "operator": "SEMVER_GTE", "value": "2.3.0"},
    {"contextName": "currentTime", "operator": "DATE_AFTER", "value": "2024-01-01T00:00:00.000Z"},
    {
        "contextName": "remoteAddress",
        "operator": "IN_CIDR",
        "values": ["10.0.0.0/8", "192.168.0.0/16"],
    },
    {"contextName": "userId", "operator": "REGEX", "value": "^user-[0-9]+$"},
]


def flag(kind: str, name: str) -> dict[str, Any]:
    if kind == "simple":
        return {"name": name, "enabled": True, "strategies": [{"name": "default"}]}
    if kind == "rollout":
        params = {"rollout": "50", "stickiness": "userId", "groupId": name}
        return {
            "name": name,
            "enabled": True,
            "strategies": [{"name": "flexibleRollout", "parameters": params}],
        }
    if kind == "constraints":
        return {
            "name": name,
            "enabled": True,
            "strategies": [{"name": "default", "constraints": CONSTRAINTS}],
        }
    if kind == "variants":
        variants = [
            {
                "name": color,
                "weight": weight,
                "stickiness": "userId",
                "payload": {"type": "string", "value": color},
            }
            for color, weight in (("red", 334), ("green", 333), ("blue", 333))
        ]
        params = {"rollout": "100", "stickiness": "default", "groupId": name}
        return {
            "name": name,
            "enabled": True,
            "strategies": [{"name": "flexibleRollout", "parameters": params}],
            "variants": variants,
        }
    raise ValueError(kind)


KINDS = ("simple", "rollout", "constraints", "variants")


def contexts(count: int, start: int = 0) -> list[dict[str, Any]]:
    """`count` requests from distinct users (ids and addresses from `start` on); the
    environment, app, plan and version repeat, as they do in real traffic."""
    out = []
    for i in range(start, start + count):
        out.append(
            {
                "userId": f"user-{i}",
                "sessionId": f"s{i}",
                "environment": "production",
                "appName": "shop",
                "remoteAddress": f"10.{i // 62500 % 250}.{i // 250 % 250}.{i % 250 + 1}",
                "currentTime": "2025-06-01T12:00:00.000Z",
                "properties": {
                    "email": f"u{i}@EXAMPLE.com",
                    "plan": "pro" if i % 3 else "free",
                    "seats": str(i % 20),
                    "version": f"2.{i % 6}.0",
                },
            }
        )
    return out


def rate(
    call: Callable[[str, dict[str, Any]], Any], name: str, batches: list[list[dict[str, Any]]]
) -> float:
    """Best evaluations per second over the batches. Each batch has users never seen before,
    so nothing remembered about a user id or an address in one pass helps the next."""
    best = 0.0
    for ctxs in batches:
        start = time.perf_counter()
        for ctx in ctxs:
            call(name, ctx)
        elapsed = time.perf_counter() - start
        best = max(best, len(ctxs) / elapsed)
    return best


def sdk_client(doc: dict[str, Any], workdir: Path) -> Any:
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    cache = FileCache("bench-flags", directory=str(workdir))
    cache.bootstrap_from_dict(doc)
    return UnleashClient(
        url="http://127.0.0.1:9/api",  # never contacted: bootstrapped, not initialised
        app_name="bench-flags",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
    )


def machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import os

    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def speed(quick: bool) -> None:
    doc = {"version": 1, "features": [flag(kind, kind) for kind in KINDS]}
    engine = FlagEngine.from_unleash(doc)
    # Same batch size for both, best pass of each: the machine is shared, a pass that
    # another process interrupts is slower, and the best pass is the least disturbed.
    size = 100 if quick else 500
    ctxs = contexts(size)
    ours_batches = [contexts(size, 10_000 + n * size) for n in range(3 if quick else 20)]
    sdk_batches = [contexts(size, 900_000 + n * size) for n in range(3 if quick else 8)]
    with tempfile.TemporaryDirectory() as tmp:
        sdk = sdk_client(doc, Path(tmp))
        print("| flag | call | nonstop evals/s | UnleashClient evals/s | ratio | agree |")
        print("|---|---|---:|---:|---:|---|")
        for kind in KINDS:
            if kind == "variants":
                ours, theirs, call = engine.get_variant, sdk.get_variant, "get_variant"
            else:
                ours, theirs, call = engine.is_enabled, sdk.is_enabled, "is_enabled"
            agree = all(ours(kind, c) == theirs(kind, c) for c in ctxs)
            fast = rate(ours, kind, ours_batches)
            slow = rate(theirs, kind, sdk_batches)
            print(
                f"| {kind} | {call} | {fast:,.0f} | {slow:,.0f} | {fast / slow:,.0f}x | {agree} |"
            )
        sdk.destroy()


def memory(count: int) -> None:
    doc = {"version": 1, "features": [flag(KINDS[i % 4], f"flag-{i}") for i in range(count)]}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    engine = FlagEngine.from_unleash(doc)
    elapsed = time.perf_counter() - start
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(engine) == count
    per_flag = (after - before) / count
    print()
    mib = (after - before) / 2**20
    print(f"memory: {count:,} compiled flags (the four kinds in turn) take {mib:.1f} MiB")
    print(f"        ({per_flag / 1024:.1f} KiB a flag, tracemalloc, document itself excluded)")
    # compile time without tracemalloc's overhead
    start = time.perf_counter()
    FlagEngine.from_unleash(doc)
    plain = time.perf_counter() - start
    print(f"compile: {count:,} flags in {plain:.2f} s (with tracemalloc on: {elapsed:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run, for a smoke test")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print()
    speed(args.quick)
    memory(1_000 if args.quick else 10_000)


if __name__ == "__main__":
    main()
