"""Reading the host for ``nonstop doctor``: the I/O half (the checks are in doctor.py)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import socket
from pathlib import Path
from typing import TypedDict

from nonstop.agent.paths import Paths
from nonstop.host.doctor import Facts, Listener, current_python

MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def gather(paths: Paths) -> Facts:
    from nonstop.config import load_config
    from nonstop.config.schema import AppConfig, NonstopConfig
    from nonstop.errors import ConfigError

    config_error = None
    try:
        config = load_config(paths.config)
    except ConfigError as exc:
        config_error = str(exc)
        config = NonstopConfig(app=AppConfig(name="app", command="app {port}"))
    agent_pid = running_agent(paths)
    kind = config.router.kind
    binary, version, error = router_binary(kind)
    soft, hard, whose = open_files(agent_pid)
    return Facts(
        python=current_python(),
        config_error=config_error,
        config_found=paths.config.is_file(),
        router_kind=kind,
        router_binary=binary,
        router_version=version,
        router_error=error,
        listeners=tuple(listeners(config, paths, agent_pid)),
        migrate_req=read_int(MIGRATE_REQ),
        open_files=(soft, hard),
        open_files_of=whose,
        **state_dir_facts(paths.state),
    )


def running_agent(paths: Paths) -> int | None:
    """The pid in .nonstop/agent.pid when that process is alive."""
    pid = read_int(paths.pidfile)
    if pid is None or not Path(f"/proc/{pid}").exists():
        return None
    return pid


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def router_binary(kind: str) -> tuple[str | None, str | None, str]:
    """``(path, version, "")`` or ``(path or None, None, why)``."""
    from nonstop.drivers.router import caddy_process, haproxy_process, nginx_process
    from nonstop.errors import NonstopError

    finders = {
        "caddy": (caddy_process.find_caddy, caddy_process.caddy_version),
        "haproxy": (haproxy_process.find_haproxy, haproxy_process.haproxy_version),
        "nginx": (nginx_process.find_nginx, nginx_process.nginx_version),
    }
    find, version = finders[kind]
    try:
        binary = find()
    except NonstopError as exc:
        return None, None, str(exc)
    try:
        return str(binary), version(binary), ""
    except NonstopError as exc:
        return str(binary), None, str(exc)


def listeners(config: object, paths: Paths, agent_pid: int | None) -> list[Listener]:
    from nonstop.config.schema import NonstopConfig

    assert isinstance(config, NonstopConfig)
    wanted = [("router.listen", config.router.listen)]
    if config.agent.listen and not config.agent.listen.startswith("unix:"):
        wanted.append(("agent.listen", config.agent.listen))
    if config.flags.listen:
        wanted.append(("flags.listen", config.flags.listen))
    return [probe(setting, address, paths, agent_pid) for setting, address in wanted]


def probe(setting: str, address: str, paths: Paths, agent_pid: int | None) -> Listener:
    """Free (we could bind it), ours (this project's agent or router holds it) or taken."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, port))
    except ValueError:
        return Listener(setting, address, "invalid", "expected HOST:PORT")
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return Listener(setting, address, "invalid", f"cannot bind it: {exc.strerror}")
        pid = listener_pid(port)
        if pid is not None and (pid == agent_pid or ours(pid, paths)):
            return Listener(setting, address, "ours")
        return Listener(setting, address, "taken", describe_pid(pid))
    return Listener(setting, address, "free")


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` (any address), from /proc; None when unknown
    (another user's process: its fds are not ours to read)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def ours(pid: int, paths: Paths) -> bool:
    """A process of this project: its router (``.nonstop/router/<program>.pid``) or one that
    carries this state dir in its environment (instances)."""
    if pid in router_pids(paths):
        return True
    marker = f"NONSTOP_STATE_DIR={paths.state}\0".encode()
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes() + b"\0"
    except OSError:
        return False


def router_pids(paths: Paths) -> set[int]:
    found = set()
    for record in (paths.state / "router").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            text = record.read_text().strip()
            found.add(int(json.loads(text)["pid"]) if text.startswith("{") else int(text))
    return found


def describe_pid(pid: int | None) -> str:
    if pid is None:
        return ""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({name})"


def open_files(agent_pid: int | None) -> tuple[int, int, str]:
    """The running agent's open-file limits, else this process's (what `nonstop up` would
    give the agent)."""
    if agent_pid is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{agent_pid}/limits").read_text().splitlines():
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return _limit(soft), _limit(hard), f"the running agent (pid {agent_pid})"
    soft_now, hard_now = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _limit(soft_now), _limit(hard_now), "an agent started from this shell"


def _limit(value: int | str) -> int:
    if value in ("unlimited", resource.RLIM_INFINITY):
        return 2**31
    return int(value)


class StateFacts(TypedDict):
    state_dir: str
    state_exists: bool
    state_writable: bool
    state_owner: int
    uid: int
    state_mode: int
    free_bytes: int


def state_dir_facts(state: Path) -> StateFacts:
    exists = state.is_dir()
    where = state if exists else state.parent
    uid = os.getuid()
    st = where.stat() if where.exists() else None
    writable = st is not None and os.access(where, os.W_OK | os.X_OK)
    free = shutil.disk_usage(where).free if st is not None else 0
    return {
        "state_dir": str(state),
        "state_exists": exists,
        "state_writable": writable,
        "state_owner": st.st_uid if st is not None else uid,
        "uid": uid,
        "state_mode": (st.st_mode & 0o777) if st is not None else 0,
        "free_bytes": free,
    }
