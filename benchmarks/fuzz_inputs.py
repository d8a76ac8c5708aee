"""Fuzz the inputs users hand nonstop with a long budget: config files (TOML, and mutated
bytes of the example file), flag documents (`flags import`) and migration files (`lint`).

Every input must be accepted or refused with a UsageError. Anything else counts as a
traceback; an input that takes more than ``--hang`` seconds counts as a hang (SIGALRM). The
strategies and checks are the ones tests/fuzz runs with a small seeded budget.

    python benchmarks/fuzz_inputs.py [--examples 5000] [--hang 10] [--seed N]

Prints a Markdown table for docs/benchmarks/fuzz.md.
"""

from __future__ import annotations

import argparse
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzz.inputs import (
    EXAMPLE_CONFIG,
    check_config,
    check_config_file,
    check_sql,
    config_documents,
    flag_checker,
    flag_documents,
    sql_files,
)


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang


class Tally:
    def __init__(self, hang_s: int) -> None:
        self.hang_s = hang_s
        self.tried = 0
        self.tracebacks: list[str] = []
        self.hangs: list[str] = []
        self.slowest = 0.0
        self.slowest_input = ""

    def run(self, check: Callable[..., None], *args: Any) -> None:
        self.tried += 1
        began = time.perf_counter()
        signal.alarm(self.hang_s)
        try:
            check(*args)
        except Hang:
            self.hangs.append(repr(args)[:200])
        except Exception:
            self.tracebacks.append(traceback.format_exc(limit=3) + repr(args)[:200])
        finally:
            signal.alarm(0)
            took = time.perf_counter() - began
            if took > self.slowest:
                self.slowest, self.slowest_input = took, repr(args)[:300]


def fuzz(
    name: str, strategy: Any, check: Callable[..., None], examples: int, tally: Tally, s: int
) -> None:
    @seed(s)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def target(args: tuple[Any, ...]) -> None:
        tally.run(check, *args)

    target()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--hang", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    flag_check, close = flag_checker()
    data = EXAMPLE_CONFIG.encode()

    def mutated(noise: bytes, at: int) -> None:
        check_config_file(data[:at] + noise + data[at + len(noise) :])

    targets = [
        ("config (TOML documents)", st.tuples(config_documents()), check_config),
        (
            "config (mutated example file)",
            st.tuples(st.binary(max_size=200), st.integers(0, len(data))),
            mutated,
        ),
        ("flag documents (import)", st.tuples(flag_documents()), flag_check),
        ("migration files (lint)", st.tuples(sql_files()), check_sql),
    ]
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; seed {args.seed}\n")
    print(f"| input | inputs tried | tracebacks | hangs (> {args.hang}s) | slowest input | took |")
    print("|---|---:|---:|---:|---:|---:|")
    failed = False
    try:
        for name, strategy, check in targets:
            tally = Tally(args.hang)
            began = time.monotonic()
            fuzz(name, strategy, check, args.examples, tally, args.seed)
            took = time.monotonic() - began
            print(
                f"| {name} | {tally.tried:,} | {len(tally.tracebacks)} | {len(tally.hangs)} | "
                f"{tally.slowest * 1e3:,.0f} ms | {took:,.0f} s |",
                flush=True,
            )
            for text in (tally.tracebacks + tally.hangs)[:3]:
                print(text, file=sys.stderr)
            print(f"{name}: slowest input {tally.slowest_input}", file=sys.stderr)
            failed |= bool(tally.tracebacks or tally.hangs)
    finally:
        close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
