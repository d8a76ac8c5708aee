"""Stopping a local instance so that no process of it outlives the stop.

An instance is its main process plus everything it started. Most of that stays in the
instance's process group, but not all: RQ's work-horse calls ``setpgrp()``, daemons call
``setsid()``. The processes of an instance are therefore found three ways, and the union kept
(with each process's start time, so a recycled pid is never signalled):

- the members of its process group;
- the descendants of any process already known (the parent tree, read while they are alive);
- every process whose environment carries the instance's run tag (``NONSTOP_RUN``), which a
  child inherits and keeps after its parent died and it was re-parented to init.

The stop signal goes where ``kill_mode`` says (:data:`KILL_MODES`, a registry of small
functions): ``main`` to the main process only, so a worker's pool children are ended by the
worker itself after their jobs; ``group`` to the whole group. When the main process is the
shell running a compound command (``cd app && celery ...``), which does not forward signals,
``main`` signals the shell's children: the programs it runs, not their own children. At the
deadline every known process is sent SIGKILL and the ones outside the group are reported.
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
from collections.abc import Callable
from dataclasses import dataclass, field

from nonstop.drivers.runtime import procfs
from nonstop.drivers.runtime.localref import LocalRef
from nonstop.errors import RuntimeDriverError

RUN_TAG = "NONSTOP_RUN"
"""The environment variable holding an instance run's tag (see the module docstring)."""


def signal_number(name: str, role: str = "stop") -> int:
    try:
        return int(signals.Signals[name])
    except KeyError:
        raise RuntimeDriverError(f"unknown {role} signal {name!r}") from None


def runs_under_shell(pid: int) -> bool:
    """The process is our ``/bin/sh -c`` wrapper of a compound command (not exec'd)."""
    return procfs.command_line(pid)[:2] == ["/bin/sh", "-c"]


def _signal_group(handle: LocalRef, sig: int) -> None:
    try:
        os.killpg(handle.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise RuntimeDriverError(
            f"instance {handle.instance_id}: not allowed to signal process group {handle.pid}"
        ) from exc


def _signal_main(handle: LocalRef, sig: int) -> None:
    stat = procfs.read_stat(handle.pid)
    if stat is None or stat.gone:
        _signal_group(handle, sig)  # no main left to ask: whatever is left of the group
        return
    targets = [handle.pid]
    if runs_under_shell(handle.pid):  # the shell passes no signal on: its programs get it
        children = [s.pid for s in procfs.snapshot() if s.ppid == handle.pid]
        targets = children or targets
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


KILL_MODES: dict[str, Callable[[LocalRef, int], None]] = {
    "main": _signal_main,
    "group": _signal_group,
}
"""Where the stop (and quiet) signal goes, by ``kill_mode``."""


def send(handle: LocalRef, signal_name: str, kill_mode: str, role: str = "stop") -> None:
    """Send ``signal_name`` (the ``role`` signal: stop, quiet) the way ``kill_mode`` says."""
    try:
        deliver = KILL_MODES[kill_mode]
    except KeyError:
        modes = ", ".join(KILL_MODES)
        raise RuntimeDriverError(f"unknown kill_mode {kill_mode!r}: expected {modes}") from None
    deliver(handle, signal_number(signal_name, role))


@dataclass
class InstanceProcesses:
    """The live processes of one instance, as ``pid -> start time`` (module docstring)."""

    handle: LocalRef
    known: dict[int, str] = field(default_factory=dict)

    def refresh(self, *, by_tag: bool = False) -> dict[int, str]:
        """Look again: drop the ones that ended, add the group, descendants and (with
        ``by_tag``, which reads every environment) the tagged ones. Returns ``known``."""
        stats = procfs.snapshot()
        alive = {stat.pid: stat for stat in stats}
        self.known = {
            pid: start
            for pid, start in self.known.items()
            if pid in alive and alive[pid].start_time == start
        }
        found = {stat.pid for stat in stats if stat.pgrp == self.handle.pid}
        if by_tag and self.handle.tag:
            found |= procfs.carrying(RUN_TAG, self.handle.tag, stats)
        roots = found | set(self.known)
        if self._leader_is_ours(alive):
            roots.add(self.handle.pid)
        found |= roots | procfs.descendants(roots, stats)
        for pid in found:
            if pid in alive and pid != os.getpid():
                self.known.setdefault(pid, alive[pid].start_time)
        return self.known

    def _leader_is_ours(self, alive: dict[int, procfs.ProcStat]) -> bool:
        stat = alive.get(self.handle.pid)
        return stat is not None and stat.start_time == self.handle.start_marker

    def escaped(self) -> tuple[int, ...]:
        """Known processes outside the instance's process group."""
        outside = []
        for pid in self.known:
            stat = procfs.read_stat(pid)
            if stat is not None and not stat.gone and stat.pgrp != self.handle.pid:
                outside.append(pid)
        return tuple(sorted(outside))

    def kill(self) -> None:
        """SIGKILL the group and every known process that is still the one we saw."""
        _signal_group(self.handle, signals.SIGKILL)
        for pid, start in self.known.items():
            stat = procfs.read_stat(pid)
            if stat is not None and stat.start_time == start:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signals.SIGKILL)
