"""Finding nginx, checking its config, reading its log, and what /proc says about its workers
(nginx has no admin API: signals change it, /proc shows its connections)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from nonstop.drivers.router.process import binary_version, find_binary, start_time
from nonstop.errors import RouterError

SEARCHED = ["nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx"]


def find_nginx(explicit: Path | None = None) -> Path:
    """The nginx binary: ``explicit``, else on PATH, else in /usr/sbin or /usr/local/sbin."""
    return find_binary(
        explicit,
        list(SEARCHED),
        'install the system package (apt-get install nginx) or use [router] kind = "caddy"',
    )


def nginx_version(binary: Path) -> str:
    """``nginx -v``'s version (``1.22.1``); nginx prints it on stderr."""
    try:
        done = subprocess.run(
            [str(binary), "-v"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return binary_version(binary, "-v")[-1]  # its error names what failed
    return done.stderr.strip().rpartition("/")[2] or done.stderr.strip()


def check_config(binary: Path, config: Path, prefix: Path) -> None:
    """``nginx -t``: a config nginx refuses is a RouterError quoting its complaint."""
    done = subprocess.run(
        [str(binary), "-t", "-q", "-c", str(config), "-p", str(prefix), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise RouterError(f"nginx refused {config}: {last_error_text(done.stderr)}")


GENERIC = ("still could not bind()",)
"""Closing messages that follow the specific one (``bind() to ... failed (98: Address already
in use)``): the specific one is the cause worth quoting."""


def last_error_text(text: str) -> str:
    """The last ``[emerg]``/``[alert]``/``[crit]``/``[error]`` message, without its prefix."""
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.rstrip().endswith(GENERIC):
            continue
        for level in ("[emerg]", "[alert]", "[crit]", "[error]"):
            if level in line:
                return line.split(": ", 1)[1] if ": " in line else line
    return lines[-1] if lines else "(empty log)"


def last_error(log: Path) -> str:
    try:
        return last_error_text(log.read_text(errors="replace"))
    except OSError:
        return "(no log)"


def members(home: Path, program: str = "nginx") -> list[int]:
    """Live processes running ``program`` with ``home`` as their working directory: the master
    we started there and its workers, which outlive a master killed with SIGKILL."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(entry / "cwd")) != home:
                continue
            if not Path(os.readlink(entry / "exe")).name.startswith(program):
                continue
            stat = (entry / "stat").read_text()
            if stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def title(pid: int) -> str:
    """A process's title (nginx sets ``nginx: worker process is shutting down`` on old workers);
    empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def serving_workers(home: Path) -> set[int]:
    """nginx's workers (of :func:`members`) that still accept connections (not shutting down)."""
    return {
        pid
        for pid in members(home)
        if (name := title(pid)).startswith("nginx: worker") and "shutting down" not in name
    }


def old_workers(home: Path) -> list[int]:
    """nginx's workers (of :func:`members`) of older configs, shutting down but still holding
    connections, oldest first."""
    found = []
    for pid in members(home):
        name, started = title(pid), start_time(pid)
        if name.startswith("nginx: worker") and "shutting down" in name and started is not None:
            found.append((int(started), pid))
    return [pid for _, pid in sorted(found)]


def to_stop(
    oldest_first: list[int],
    old_since: dict[int, float],
    held: dict[int, int],
    now: float,
    keep: int,
    drain_timeout: float,
) -> list[int]:
    """The old workers to stop so that no more than ``keep`` remain: those holding the fewest
    connections (``held``; oldest first among equals), each process freed closing as few as it
    can, and of them only those old (``old_since``, monotonic seconds) for ``drain_timeout`` at
    least, so that a request never loses its drain time; the others are stopped at a later
    reload.

    Worked examples (workers oldest first, keep 2, drain 30)::

        [1, 2, 3, 4], all old since 0, held 1 each,          now 40 -> [1, 2]
        [1, 2, 3, 4], all old since 0, held {1: 50, else 1},  now 40 -> [2, 3]
        [1, 2, 3, 4], all old since 0, held 1 each,          now 10 -> []  (not drained yet)
        [1, 2, 3, 4], 4 old since 35, held {3: 0, 4: 0, else 5}, now 40 -> [3]  (4 later)
        [1, 2],       all old since 0, held 1 each,          now 40 -> []  (no more than keep)
    """
    excess = max(0, len(oldest_first) - keep)
    chosen = set(sorted(oldest_first, key=lambda pid: held.get(pid, 0))[:excess])
    return [
        pid
        for pid in oldest_first
        if pid in chosen and now - old_since.get(pid, now) >= drain_timeout
    ]


def terminate(pids: list[int]) -> None:
    """SIGTERM to old workers: nginx closes at once every connection such a worker holds, and
    its master starts none in its place (only a serving worker is replaced)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def kill_all(home: Path, sig: signal.Signals) -> None:
    """Signal every nginx process of :func:`members` (orphaned workers included)."""
    for pid in members(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _hex_address(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    try:
        packed = bytes(int(part) for part in host.split("."))
    except ValueError:
        return None
    if len(packed) != 4 or not port.isdigit():
        return None
    return packed[::-1].hex().upper(), int(port)


def open_connections(pids: list[int], addresses: list[str]) -> dict[str, int]:
    """Established TCP connections from the processes ``pids`` to each of ``addresses``
    (IPv4 ``a.b.c.d:port``), from /proc: nginx opens one connection per proxied request or
    stream (no upstream keep-alive), so this is what is in flight on each upstream."""
    counts = dict.fromkeys(addresses, 0)
    owned = set().union(*(_socket_inodes(pid) for pid in pids))
    for inode, address in _established(addresses).items():
        if inode in owned:
            counts[address] += 1
    return counts


def connections_by_process(pids: list[int], addresses: list[str]) -> dict[int, int]:
    """How many established connections to ``addresses`` each of ``pids`` holds (as
    :func:`open_connections` counts them)."""
    established = _established(addresses)
    return {pid: len(_socket_inodes(pid) & established.keys()) for pid in pids}


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _established(addresses: list[str]) -> dict[str, str]:
    """The inode of every established IPv4 TCP connection to one of ``addresses``, and that
    address."""
    wanted = {hexed: address for address in addresses if (hexed := _hex_address(address))}
    found: dict[str, str] = {}
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return found
    for row in rows:
        fields = row.split()
        if len(fields) < 10 or fields[3] != "01":
            continue
        host, _, port = fields[2].partition(":")
        address = wanted.get((host, int(port, 16)))
        if address is not None:
            found[fields[9]] = address
    return found
