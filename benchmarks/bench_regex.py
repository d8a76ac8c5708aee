"""REGEX constraints: time of one search against input length, RE2 (what flags use, through
the Rust-dialect translator) against Python's backtracking `re` as the baseline, same run.

Pathological patterns make `re` double its time with every character; RE2 stays linear in
the input. Python's `re` is stopped for a pattern once one search takes more than
``--re-budget`` seconds (the next length would take about twice as long).

    python benchmarks/bench_regex.py [--re-budget 2.0]

Prints a Markdown table for docs/benchmarks/regex.md.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from collections.abc import Callable

from nonstop.flags.engine._regex import compile_rust_regex

# (pattern, input of length n)
CASES: list[tuple[str, Callable[[int], str]]] = [
    ("^(a+)+$", lambda n: "a" * n + "!"),
    ("^(a|a)*$", lambda n: "a" * n + "!"),
    ("^(a|aa)+$", lambda n: "a" * n + "!"),
    ("(x+x+)+y", lambda n: "x" * n),
    ("^([a-z]+\\s?)*$", lambda n: "ab " * (n // 3) + "!"),
    ("^(\\w+\\d*)+@", lambda n: "a1" * (n // 2) + "!"),
]
RE_LENGTHS = [10, 14, 18, 20, 22, 24, 25, 26, 27, 28, 30, 32]
RE2_LENGTHS = [10, 100, 1_000, 10_000]


def timed(search: Callable[[str], object], text: str, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        search(text)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--re-budget", type=float, default=2.0)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| pattern | input length | Python re | RE2 (nonstop) |")
    print("|---|---:|---:|---:|")
    for pattern, make in CASES:
        rust = compile_rust_regex(pattern)
        python = re.compile(pattern)
        re_times: dict[int, float] = {}
        for n in RE_LENGTHS:
            took = timed(python.search, make(n), 1)
            re_times[n] = took
            if took > args.re_budget:
                break
        for n in sorted(set(re_times) | set(RE2_LENGTHS)):
            text = make(n)
            re2_s = timed(rust.search, text, 5)
            base = f"{re_times[n] * 1e3:,.2f} ms" if n in re_times else "-"
            print(f"| `{pattern}` | {n:,} | {base} | {re2_s * 1e6:,.1f} µs |")
        worst_re = max(re_times.values())
        at = max(re_times)
        print(
            f"| `{pattern}` | **summary** | {worst_re:,.2f} s at {at} chars | "
            f"{timed(rust.search, make(10_000), 5) * 1e3:,.2f} ms at 10,000 chars |"
        )


if __name__ == "__main__":
    main()
