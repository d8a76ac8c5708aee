"""The local process runtime: every instance is a child process on a port of this machine.

How an instance runs:

- ``/bin/sh -c "<command>"`` with ``{port}`` replaced by the port (plain text replacement, so
  shell syntax such as ``${HOME}`` in the command is left alone). A simple command (no ``;``,
  ``&``, ``|``, parentheses, backquotes, newlines, leading ``VAR=value`` or shell builtin such
  as ``cd`` or ``exit``) is prefixed with
  ``exec``, so the app itself is the instance's pid and its exit code and signals are its own;
  anything else runs under the shell, whose exit code is the last command's. It runs in the
  release's directory,
  with the agent's environment plus the release's ``env`` plus ``PORT``, ``NONSTOP_RELEASE``
  and ``NONSTOP_INSTANCE``.
- In its own session and process group (``start_new_session``), stdin from /dev/null and
  stdout/stderr appended to its log file: no pipe ties it to the agent and no signal sent to
  the agent's group reaches it, so instances keep serving when the agent dies.
- Stopping follows the instance's stop rules (drivers/runtime/stopping.py): the stop signal to
  the main process (or the group), SIGKILL to every process of the instance at the deadline,
  children that left the group included (found by the ``NONSTOP_RUN`` tag in their
  environment and by parentage), and reported.
- Its handle's opaque reference (drivers/runtime/localref.py) records the pid, the process
  start time (/proc/<pid>/stat field 22) and the run tag. A new agent re-adopts an instance only
  when pid and start time still match, so a recycled pid is never taken for ours, and never
  signalled.
- Processes of this state dir that no live handle accounts for (started just before an agent
  crash, before their handle was written) are found by ``NONSTOP_STATE_DIR`` and
  ``NONSTOP_INSTANCE`` in their environment and stopped by :meth:`LocalRuntime.sweep_strays`.

Free ports are found by binding port 0 and closing the socket; another program may take the
port before the instance binds it. When an instance exits within ``bind_grace`` seconds and its
log says "address already in use", it is started again on another port (``port_attempts``
times in all). A command without ``{port}`` (a worker role) is started once, unwatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nonstop.drivers.runtime import procfs, stopping, strays
from nonstop.drivers.runtime.base import (
    RUNNING,
    InstanceHandle,
    InstanceSpec,
    InstanceStatus,
    KillMode,
    StopReport,
    StopRules,
    Supervision,
)
from nonstop.drivers.runtime.localref import LocalRef
from nonstop.errors import RuntimeDriverError

if TYPE_CHECKING:
    from nonstop.config.schema import HealthConfig
    from nonstop.drivers.runtime.supervise import SupervisorEvent

ADDRESS_IN_USE = re.compile(r"address already in use|EADDRINUSE|errno 98\b", re.IGNORECASE)
POLL_INTERVAL = 0.05
KILL_WAIT = 5.0
QUIET_TIMEOUT = 30.0
"""Longest run of a ``quiet_command``."""
"""After SIGKILL, how long to wait for the group to vanish before reporting it stuck."""


_COMPOUND = re.compile(r"[;&|()`\n]")
# Shell keywords and builtins: "exec" cannot run them as programs.
_NOT_EXECUTABLE = frozenset(
    [
        "!",
        "{",
        "}",
        "[[",
        "case",
        "do",
        "done",
        "elif",
        "else",
        "esac",
        "fi",
        "for",
        "function",
        "if",
        "in",
        "select",
        "then",
        "until",
        "while",
        ".",
        ":",
        "alias",
        "break",
        "cd",
        "continue",
        "eval",
        "exec",
        "exit",
        "export",
        "local",
        "read",
        "readonly",
        "return",
        "set",
        "shift",
        "source",
        "times",
        "trap",
        "ulimit",
        "umask",
        "unset",
        "wait",
    ]
)


def shell_command(command: str) -> str:
    """What ``/bin/sh -c`` runs for ``command``: simple commands are exec'd (see the module doc).

    >>> shell_command("python3 app.py --port 8001")
    'exec python3 app.py --port 8001'
    >>> shell_command("cd web && python3 app.py --port 8001")
    'cd web && python3 app.py --port 8001'
    """
    words = command.split()
    if not words or _COMPOUND.search(command) or "=" in words[0] or words[0] in _NOT_EXECUTABLE:
        return command
    return f"exec {command}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Something listens on ``host:port`` (or on the wildcard address with that port).

    SO_REUSEADDR makes a port held only by TIME_WAIT connections count as free, as it is for
    servers, which set the same option."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def describe_returncode(code: int) -> str:
    """``-9`` -> "killed by SIGKILL"; ``3`` -> "exited with code 3"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(slots=True)
class _Child:
    popen: subprocess.Popen[bytes]
    handle: InstanceHandle
    ref: LocalRef

    @property
    def start_marker(self) -> str:
        return self.ref.start_marker


class LocalRuntime:
    """Runs instances as local processes; see the module docstring for the contract."""

    kind = "local"

    def __init__(
        self,
        *,
        log_dir: str | Path | None = None,
        state_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        bind_grace: float = 0.3,
        port_attempts: int = 3,
    ) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.state_dir = Path(state_dir) if state_dir is not None else None
        """The state dir whose stray processes :meth:`sweep_strays` stops (None: none)."""
        self.host = host
        self.bind_grace = bind_grace
        self.port_attempts = port_attempts
        self._children: dict[int, _Child] = {}
        self._logs: dict[str, Path] = {}
        self._specs: dict[str, InstanceSpec] = {}

    # -- start ---------------------------------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> InstanceHandle:
        if not Path(spec.cwd).is_dir():
            raise RuntimeDriverError(
                f"instance {spec.instance_id}: working directory {spec.cwd} does not exist"
            )
        log_path = self._log_path(spec)
        if spec.port is not None:
            if port_in_use(spec.port, self.host):
                raise RuntimeDriverError(
                    f"instance {spec.instance_id}: port {spec.port} on {self.host} is already "
                    "in use; stop what listens there or leave the port unset to pick a free one"
                )
            return self._spawn(spec, spec.port, log_path)
        if "{port}" not in spec.command:
            # A role without {port} (a worker) binds none of ours: there is no race to lose,
            # and watching bind_grace (0.3 s) for a port it never opens only delayed its start.
            return self._spawn(spec, free_port(self.host), log_path)
        for _ in range(self.port_attempts):
            offset = log_path.stat().st_size if log_path and log_path.exists() else 0
            handle = self._spawn(spec, free_port(self.host), log_path)
            if not await self._lost_port_race(handle, log_path, offset):
                return handle
        last = " | ".join(self.read_log(handle, 1))
        raise RuntimeDriverError(
            f'instance {spec.instance_id}: exited with "address already in use" on '
            f"{self.port_attempts} free ports in a row (does the command use {{port}}?); "
            f"last output: {last}"
        )

    def _log_path(self, spec: InstanceSpec) -> Path | None:
        if spec.log_path is not None:
            path = Path(spec.log_path)
        elif self.log_dir is not None:
            path = self.log_dir / f"{spec.instance_id}.log"
        else:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._logs[spec.instance_id] = path
        return path

    def _spawn(self, spec: InstanceSpec, port: int, log_path: Path | None) -> InstanceHandle:
        command = spec.command.replace("{port}", str(port))
        tag = uuid.uuid4().hex
        env = {
            **os.environ,
            **spec.env,
            "PORT": str(port),
            "NONSTOP_RELEASE": spec.release,
            "NONSTOP_INSTANCE": spec.instance_id,
            stopping.RUN_TAG: tag,
        }
        if self.state_dir is not None:
            env[strays.STATE_DIR] = str(self.state_dir)
        try:
            with contextlib.ExitStack() as stack:
                out = (
                    stack.enter_context(open(log_path, "ab"))
                    if log_path is not None
                    else subprocess.DEVNULL
                )
                popen = subprocess.Popen(
                    ["/bin/sh", "-c", shell_command(command)],
                    cwd=spec.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise RuntimeDriverError(
                f"instance {spec.instance_id}: cannot start {command!r}: {exc.strerror or exc}"
            ) from exc
        ref = LocalRef(spec.instance_id, popen.pid, procfs.start_marker(popen.pid), tag)
        handle = InstanceHandle(
            instance_id=spec.instance_id,
            release=spec.release,
            host=self.host,
            port=port,
            reference=ref.dumps(),
            started_at=time.time(),
            runtime=self.kind,
        )
        self._specs[spec.instance_id] = spec
        self._forget_ended(spec.instance_id)
        self._children[popen.pid] = _Child(popen, handle, ref)
        return handle

    def _forget_ended(self, instance_id: str) -> None:
        """Keep the exit status of only the latest ended run of ``instance_id``: a
        supervised instance may restart for weeks."""
        ended = sorted(
            (child.handle.started_at, pid)
            for pid, child in self._children.items()
            if child.handle.instance_id == instance_id and child.popen.poll() is not None
        )
        for _, pid in ended[:-1]:
            del self._children[pid]

    async def _lost_port_race(self, handle: InstanceHandle, log: Path | None, offset: int) -> bool:
        """True when the instance exited at once because its port was taken meanwhile."""
        deadline = time.monotonic() + self.bind_grace
        while time.monotonic() < deadline:
            if not self._alive(LocalRef.of(handle)):
                return log is not None and bool(ADDRESS_IN_USE.search(_read_from(log, offset)))
            if await asyncio.to_thread(_accepts, handle.host, handle.port):
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return False

    # -- inspect -------------------------------------------------------------------------------

    def _own(self, ref: LocalRef) -> subprocess.Popen[bytes] | None:
        """Our own child process for ``ref`` (reaped if it has exited), or None."""
        child = self._children.get(ref.pid)
        if child is None or child.start_marker != ref.start_marker:
            return None
        child.popen.poll()
        return child.popen

    def started(self) -> list[InstanceHandle]:
        """Handles of the instances this object started that are still alive."""
        return [child.handle for child in self._children.values() if self._alive(child.ref)]

    def _alive(self, ref: LocalRef) -> bool:
        """The very process of ``ref`` runs (pid and start marker match; a cheap /proc read)."""
        self._own(ref)
        stat = procfs.read_stat(ref.pid)
        return (
            stat is not None
            and not stat.gone
            and bool(ref.start_marker)
            and stat.start_time == ref.start_marker
        )

    def alive(self, handle: InstanceHandle) -> bool:
        """Synchronous check for local callers (tests, benchmarks); the port's is status()."""
        return self._alive(LocalRef.of(handle))

    def exit_reason(self, handle: InstanceHandle) -> str | None:
        """Why the instance ended, None while it runs (synchronous, local callers only)."""
        ref = LocalRef.of(handle)
        if self._alive(ref):
            return None
        popen = self._own(ref)
        if popen is not None and popen.returncode is not None:
            return describe_returncode(popen.returncode)
        return "exited"

    async def status(self, handle: InstanceHandle) -> InstanceStatus:
        reason = self.exit_reason(handle)
        return RUNNING if reason is None else InstanceStatus("exited", reason)

    async def adopt(self, handle: InstanceHandle) -> InstanceStatus:
        """Locally, adopting needs nothing but the identity check: the process is not our
        child (the agent that started it is gone), so its exit status is not known."""
        try:
            ref = LocalRef.of(handle)
        except RuntimeDriverError as exc:
            return InstanceStatus("exited", str(exc))
        return RUNNING if self._alive(ref) else InstanceStatus("exited", "exited")

    def facts(self, handle: InstanceHandle) -> Mapping[str, str | int]:
        return {"pid": LocalRef.of(handle).pid}

    def supervise(
        self, health: HealthConfig, on_event: Callable[[SupervisorEvent], None]
    ) -> Supervision:
        """Local supervision: a watch task per instance in this process (supervise.py)."""
        from nonstop.drivers.runtime.supervise import Supervisor

        return Supervisor(self, health, on_event)

    async def sweep_strays(self, known: Sequence[InstanceHandle]) -> list[str]:
        """Stop every process of this state dir whose group is no live instance's (see the
        module docstring): SIGTERM to its group, SIGKILL after 5 s."""
        if self.state_dir is None:
            return []
        refs = [LocalRef.of(handle) for handle in known if handle.reference]
        found = strays.stray_processes(
            self.state_dir, {ref.pid for ref in refs}, {ref.tag for ref in refs if ref.tag}
        )
        await strays.stop_processes(list(found), strays.GRACE)
        return [
            f"stopping stray process {pid} of {instance_id} (not recorded)"
            for pid, instance_id in found.items()
        ]

    def log_path(self, handle: InstanceHandle) -> Path | None:
        if handle.instance_id in self._logs:
            return self._logs[handle.instance_id]
        if self.log_dir is not None:
            return self.log_dir / f"{handle.instance_id}.log"
        return None

    async def log_tail(self, handle: InstanceHandle, n: int = 20) -> list[str]:
        return self.read_log(handle, n)

    def read_log(self, handle: InstanceHandle, n: int = 20) -> list[str]:
        """The last ``n`` lines the instance wrote (stdout and stderr), oldest first."""
        path = self.log_path(handle)
        if path is None or not path.exists() or n <= 0:
            return []
        size = path.stat().st_size
        text = _read_from(path, max(0, size - 64 * 1024))
        return text.splitlines()[-n:]

    # -- stop ----------------------------------------------------------------------------------

    async def stop(
        self, handle: InstanceHandle, signal: str, timeout: float, *, kill_mode: KillMode = "main"
    ) -> StopReport:
        stopping.signal_number(signal)  # an unknown name fails before anything is sent
        ref = LocalRef.of(handle)
        if not self._may_signal(ref):
            return StopReport()
        processes = stopping.InstanceProcesses(ref)
        processes.refresh(by_tag=True)
        stopping.send(ref, signal, kill_mode)
        if await self._wait_gone(processes, timeout):
            return StopReport()
        processes.refresh(by_tag=True)
        report = StopReport(killed=True, escaped=processes.escaped())
        processes.kill()
        if not await self._wait_gone(processes, KILL_WAIT):
            raise RuntimeDriverError(
                f"instance {handle.instance_id} (pid {ref.pid}) survived SIGKILL for "
                f"{KILL_WAIT:.0f}s; it may be stuck in the kernel (state D)"
            )
        return report

    async def quiet(self, handle: InstanceHandle, rules: StopRules) -> str | None:
        """Send ``quiet_signal`` (as ``kill_mode`` says) or run ``quiet_command`` in the
        instance's directory with its environment; returns why it failed, or None."""
        ref = LocalRef.of(handle)
        if not self._alive(ref):
            return "not running"
        if rules.quiet_signal:
            stopping.send(ref, rules.quiet_signal, rules.kill_mode, "quiet")
            return None
        if rules.quiet_command:
            return await self._run_quiet_command(handle, rules.quiet_command)
        return None

    async def _run_quiet_command(self, handle: InstanceHandle, command: str) -> str | None:
        cwd, env = self._instance_context(handle)
        env = {**env, "NONSTOP_PID": str(LocalRef.of(handle).pid)}
        process = await asyncio.create_subprocess_shell(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(QUIET_TIMEOUT):
                _, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return f"quiet_command did not finish within {QUIET_TIMEOUT:g}s"
        if process.returncode:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return f"quiet_command {describe_returncode(process.returncode)}: {last[0]}".strip()
        return None

    def _instance_context(self, handle: InstanceHandle) -> tuple[str | None, dict[str, str]]:
        """The directory and environment the instance was started with (when we know it)."""
        spec = self._specs.get(handle.instance_id)
        if spec is None:
            return None, {**os.environ, "NONSTOP_INSTANCE": handle.instance_id}
        env = {**os.environ, **spec.env, "PORT": str(handle.port)}
        return spec.cwd, {**env, "NONSTOP_INSTANCE": handle.instance_id}

    def _may_signal(self, ref: LocalRef) -> bool:
        """The group ``ref.pid`` is ours to signal.

        Safe when the leader is ours (start time matches) or gone: Linux does not hand out a
        pid while a process group of that number still has members, so the group's remaining
        processes are still the instance's. A live leader with another start time is a
        stranger that got the recycled pid: never signal it."""
        self._own(ref)
        stat = procfs.read_stat(ref.pid)
        return stat is None or stat.gone or stat.start_time == ref.start_marker

    async def _wait_gone(self, processes: stopping.InstanceProcesses, timeout: float) -> bool:
        """Wait until no process of the instance is left (True) or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while True:
            self._own(processes.handle)  # reap our child as soon as it exits
            if not processes.refresh():
                self._own(processes.handle)
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
