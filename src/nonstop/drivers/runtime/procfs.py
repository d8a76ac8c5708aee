"""What Linux's /proc tells about a process: enough to re-adopt an instance safely.

A pid alone is not an identity: the kernel recycles pids. The start time in
``/proc/<pid>/stat`` (field 22, clock ticks since boot) does not change for the life of a
process and two processes with the same pid never share it, so ``(pid, start time)`` names one
exact process across agent restarts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    state: str
    """One letter: R running, S sleeping, Z zombie, X dead, ..."""
    ppid: int
    pgrp: int
    num_threads: int
    start_time: str
    """Field 22, kept as text: it is only ever compared, never computed with."""

    @property
    def gone(self) -> bool:
        """Exited: a zombie waiting for its parent to reap it, or already dead.

        A zombie *leader* with other threads is not gone: either the process is still
        tearing its threads down (its parent cannot reap it yet) or only its main thread
        ended and the others still run."""
        return self.state in ("Z", "X") and self.num_threads <= 1


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/<pid>/stat`` line.

    The second field (the command name, in parentheses) may itself hold spaces and
    parentheses, so the fixed fields are read after the *last* ``)``:

    >>> parse_stat("42 (my (odd) app) S 1 42 42 0 -1 4194560 " + "0 " * 12 + "98765 0").start_time
    '98765'
    """
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # fields[0] is field 3 (state); field N is fields[N - 3].
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        num_threads=int(fields[17]),
        start_time=fields[19],
    )


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat, or None when no process has this pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return parse_stat(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def start_marker(pid: int) -> str:
    """The start time of ``pid`` as text, or "" when it does not exist."""
    stat = read_stat(pid)
    return stat.start_time if stat else ""


def snapshot() -> list[ProcStat]:
    """The stat of every live (not zombie) process, read in one pass over /proc."""
    stats = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None and not stat.gone:
                stats.append(stat)
    return stats


def group_members(pgrp: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group ``pgrp``."""
    return [stat.pid for stat in snapshot() if stat.pgrp == pgrp]


def descendants(roots: Iterable[int], stats: Iterable[ProcStat]) -> set[int]:
    """Pids of every process below ``roots`` in the parent tree of ``stats`` (roots excluded).

    >>> tree = [parse_stat(f"{p} (x) S {pp} {p} {p} 0 -1 0 " + "0 " * 12 + "1 0")
    ...         for p, pp in ((2, 1), (3, 2), (4, 3), (5, 1))]
    >>> sorted(descendants([2], tree))
    [3, 4]
    """
    children: dict[int, list[int]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def environ(pid: int) -> bytes:
    """``/proc/<pid>/environ`` framed by NUL bytes (``b"\\0A=1\\0B=2\\0"``); empty when it
    cannot be read (gone, or another user's process)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"\0" + f.read() + b"\0"
    except OSError:
        return b""


def carrying(variable: str, value: str, stats: Iterable[ProcStat]) -> set[int]:
    """Pids among ``stats`` whose environment holds ``variable=value`` exactly."""
    needle = f"\0{variable}={value}\0".encode()
    return {stat.pid for stat in stats if needle in environ(stat.pid)}


def command_line(pid: int) -> list[str]:
    """The argv of ``pid`` (empty when gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
