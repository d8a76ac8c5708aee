"""Supervising a router process, whichever router it is: finding its binary, spawning it in
its own session, recognising it later, stopping exactly it, and where its unix sockets go.

A router we started is recognised later (by a restarted agent) from its pid *and* its start
time in /proc, so a recycled pid is never mistaken for ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nonstop.errors import RouterError

UNIX_PATH_MAX = 107
"""Longest unix socket path Linux accepts (sun_path is 108 bytes with the terminating NUL)."""


def find_binary(explicit: Path | None, searched: list[str], hint: str) -> Path:
    """``explicit`` if given, else the first of ``searched`` (a name on PATH or a path) that is
    an executable file; RouterError naming what was looked for and ``hint`` (how to install)."""
    candidates = [str(explicit)] if explicit else searched
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if found and Path(found).is_file():
            return Path(found)
    name = Path(searched[-1]).name
    raise RouterError(f"{name} binary not found (looked for {', '.join(candidates)}): {hint}")


def binary_version(binary: Path, *args: str) -> list[str]:
    """The words ``binary args`` prints (its version line); RouterError when it does not run."""
    command = " ".join([binary.name, *args])
    try:
        done = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RouterError(f"{binary} does not run (`{command}` failed): {exc}") from exc
    words = done.stdout.split()
    if not words:
        raise RouterError(f"{binary} printed nothing for `{command}`")
    return words


def socket_dir(
    state_dir: Path, longest: str = "/events-00000000.sock", limit: int = UNIX_PATH_MAX
) -> Path:
    """Where a router's unix sockets go: ``state_dir`` itself when ``state_dir + longest`` fits
    in ``limit`` bytes (107 for Linux; HAProxy allows less), else
    ``/tmp/nonstop-<uid>/<hash of state_dir>``, mode 0700 and checked to be ours. It depends on
    nothing but the uid and ``state_dir`` (no environment variable), so an agent restarted from
    another shell or by systemd finds the same admin socket."""
    if len(os.fsencode(state_dir)) + len(longest) <= limit:
        return state_dir
    root = Path("/tmp")
    base = root / f"nonstop-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    info = base.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RouterError(f"{base} must be a directory owned by you with mode 0700")
    short = base / hashlib.sha256(os.fsencode(state_dir)).hexdigest()[:16]
    short.mkdir(mode=0o700, exist_ok=True)
    return short


def check_socket_path(path: Path, limit: int = UNIX_PATH_MAX, who: str = "Linux") -> Path:
    size = len(os.fsencode(path))
    if size > limit:
        raise RouterError(
            f"unix socket path {path} is {size} bytes, longer than the {limit} "
            f"{who} allows: use a shorter state directory"
        )
    if "|" in str(path):
        raise RouterError(f"unix socket path {path} contains '|', which Caddy reads as a file mode")
    return path


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None when the process is
    gone or a zombie (dead, waiting to be reaped: it serves nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    state, ticks = fields[0], fields[19]
    return None if state in ("Z", "X") else ticks


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    pid: int
    start_time: str

    def running(self) -> bool:
        return start_time(self.pid) == self.start_time

    def runs(self, program: str) -> bool:
        """Whether the process's executable is named ``program`` (``caddy``, ``haproxy``): a
        pid file copied from elsewhere, or naming some other live process, is not ours."""
        try:
            exe = Path(os.readlink(f"/proc/{self.pid}/exe"))
        except OSError:
            return False
        return exe.name.startswith(program)

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(pid=int(data["pid"]), start_time=str(data["start_time"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps({"pid": self.pid, "start_time": self.start_time}))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a reader (or a crash) sees the old content or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


LAUNCH = 'log=$0; exec "$@" </dev/null >>"$log" 2>&1 & echo $!'
"""``sh`` starts the router in the background and exits at once, printing its pid: the router is
reparented away from the agent, so the agent never has to reap it (nor leave a zombie)."""


def spawn(argv: list[str], log: Path, *, cwd: Path, env: dict[str, str] | None = None) -> int:
    """``argv`` (binary first) in its own session, so it outlives the agent (kill -9 included)
    and a Ctrl-C in the agent's terminal does not reach it; its output is appended to ``log``.
    Returns the router's pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    rotate(log)
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", LAUNCH, str(log), *argv],
            capture_output=True,
            text=True,
            cwd=str(cwd),
            env=env,
            start_new_session=True,
            timeout=30,
            check=True,
        )
        return int(done.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise RouterError(f"could not start {argv[0]}: {exc}") from exc


LOG_ROTATE_BYTES = 10 * 1024 * 1024


def rotate(log: Path, limit: int = LOG_ROTATE_BYTES) -> None:
    """Keep a router's log bounded across restarts: over ``limit`` it becomes ``<log>.1`` (one
    generation kept). A router that runs for months appends a few lines per reload only."""
    with contextlib.suppress(FileNotFoundError):
        if log.stat().st_size > limit:
            os.replace(log, log.with_name(log.name + ".1"))


def kill(record: ProcessRecord, sig: signal.Signals) -> None:
    """Signal exactly the process we started (checked by start time), nothing else."""
    if record.running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)


async def exited(record: ProcessRecord, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to end; whether it did."""
    deadline = time.monotonic() + timeout
    while record.running():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


ROUTER_PROGRAMS = ("caddy", "haproxy", "nginx")
"""The routers nonstop runs as processes; each records ``<program>.pid`` in its state dir."""


async def stop_leftovers(router_dir: Path, grace: float = 10.0) -> list[str]:
    """Stop the router processes ``router_dir``'s pid files record that are still ours, by the
    identity check an agent adopts by (same pid, same start time, the program's binary:
    decision 0332): a pid reused by another process is never signalled. SIGTERM (the router
    stops accepting and finishes its requests), SIGKILL after ``grace`` seconds. What was
    stopped, as ``"caddy (pid 4242)"``."""
    stopped = []
    for program in ROUTER_PROGRAMS:
        pid_file = router_dir / f"{program}.pid"
        record = ProcessRecord.load(pid_file)
        if record is None or not record.running() or not record.runs(program):
            continue
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            kill(record, sig)
            if await exited(record, wait):
                break
        pid_file.unlink(missing_ok=True)
        stopped.append(f"{program} (pid {record.pid})")
    return stopped


async def wait_started(
    name: str,
    pid: int,
    pid_file: Path,
    answers: Callable[[], Awaitable[bool]],
    *,
    listen: str,
    admin_socket: Path,
    log: Path,
    log_error: Callable[[Path], str],
    timeout: float,
) -> None:
    """Record the router process just spawned (pid + start time) and wait until its admin
    interface ``answers``; RouterError with the log's last error if it exits or stays silent."""
    record = ProcessRecord(pid, start_time(pid) or "gone")
    record.save(pid_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not record.running():
            pid_file.unlink(missing_ok=True)
            raise RouterError(
                f"{name} exited while starting on {listen}: {log_error(log)} (log: {log})"
            )
        if await answers():
            return
        await asyncio.sleep(0.05)
    raise RouterError(f"{name} did not answer on {admin_socket} within {timeout:g} s; see {log}")
