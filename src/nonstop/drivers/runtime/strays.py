"""Processes of a state dir that no live instance accounts for, found through /proc.

Every local instance carries ``NONSTOP_STATE_DIR`` and ``NONSTOP_INSTANCE`` in its
environment from before it exists, so a process started just before an agent crash (its handle
never written) is still found, and stopped, by the next agent or by ``nonstop down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Set
from pathlib import Path

from nonstop.drivers.runtime.stopping import RUN_TAG

STATE_DIR = "NONSTOP_STATE_DIR"
GRACE = 5.0
"""Seconds between a stray's SIGTERM and its SIGKILL."""


def stray_processes(
    state_dir: Path, known: set[int], tags: Set[str] = frozenset()
) -> dict[int, str]:
    """pid -> instance id of each process whose environment holds this ``state_dir``'s
    NONSTOP_STATE_DIR and a NONSTOP_INSTANCE, whose process group is none of ``known``
    (the pids of live instances: each leads its own group) and whose NONSTOP_RUN is none of
    ``tags`` (a live instance's child that left its group, such as RQ's work-horse)."""
    marker = f"{STATE_DIR}={state_dir}\0".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = b"\0" + (entry / "environ").read_bytes() + b"\0"
        except OSError:
            continue
        start = environ.find(b"\0NONSTOP_INSTANCE=")
        if b"\0" + marker not in environ or start < 0:
            continue
        if any(f"\0{RUN_TAG}={tag}\0".encode() in environ for tag in tags):
            continue
        pid = int(entry.name)
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if group in known or pid in known:
            continue
        value = environ[start + 18 : environ.index(b"\0", start + 1)]
        found[pid] = value.decode(errors="replace")
    return found


async def stop_processes(pids: list[int], grace: float) -> list[int]:
    """SIGTERM each pid's process group (the pid alone when it leads none), SIGKILL what is
    left after ``grace`` seconds; returns the pids that were signalled."""

    def signal_all(sig: int) -> list[int]:
        sent = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
                sent.append(pid)
        return sent

    sent = signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(pid) for pid in sent):
        await asyncio.sleep(0.05)
    signal_all(signal.SIGKILL)
    return sent


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"
