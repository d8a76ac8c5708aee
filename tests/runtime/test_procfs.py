"""/proc/<pid>/stat parsing from real-looking lines, and the live process it describes."""

from __future__ import annotations

import os

import pytest

from nonstop.drivers.runtime.procfs import ProcStat, parse_stat, read_stat, start_marker

# Fields 3..52 of a real line; {state} and {threads} vary per case.
TAIL = (
    "{state} 1 4242 4242 0 -1 4194560 331 0 0 0 2 1 0 0 20 0 {threads} 0 267336 "
    "12345 678 18446744073709551615 0 0 0 0 0 0 0 16386 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0"
)


@pytest.mark.parametrize(
    ("comm", "state", "threads", "expected"),
    [
        # a plain name
        ("python3", "S", 1, ProcStat(4242, "S", 1, 4242, 1, "267336")),
        # spaces and parentheses in the name: fields are read after the last ")"
        ("my (odd) app", "R", 3, ProcStat(4242, "R", 1, 4242, 3, "267336")),
        ("a) S 9 9 9 (b", "S", 1, ProcStat(4242, "S", 1, 4242, 1, "267336")),
    ],
)
def test_parse_stat(comm: str, state: str, threads: int, expected: ProcStat) -> None:
    assert parse_stat(f"4242 ({comm}) " + TAIL.format(state=state, threads=threads)) == expected


@pytest.mark.parametrize(
    ("state", "threads", "gone"),
    [
        ("S", 1, False),  # sleeping
        ("R", 4, False),  # running
        ("Z", 1, True),  # zombie: exited, waiting to be reaped
        ("X", 1, True),  # dead
        ("Z", 2, False),  # leader exited but another thread is still running or tearing down
    ],
)
def test_gone(state: str, threads: int, gone: bool) -> None:
    assert parse_stat("1 (x) " + TAIL.format(state=state, threads=threads)).gone is gone


def test_read_stat_of_this_process() -> None:
    stat = read_stat(os.getpid())
    assert stat is not None
    assert (stat.pid, stat.pgrp, stat.gone) == (os.getpid(), os.getpgrp(), False)
    assert start_marker(os.getpid()) == stat.start_time
    assert stat.start_time.isdigit()


def test_no_such_pid() -> None:
    assert read_stat(2**22 + 1) is None  # above the kernel's pid_max ceiling
    assert start_marker(2**22 + 1) == ""
