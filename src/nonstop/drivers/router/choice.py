"""What ``nonstop up`` says about the router on this machine (decision 0420).

Caddy stays the default: it comes with nonstop, nothing to install. Each routing change is a
Caddy reload, and a reload resets the connections the kernel queued on the old listening socket
unless ``net.ipv4.tcp_migrate_req`` is 1 (Linux 5.14+). So when the router is Caddy *by
default* (``[router] kind`` not set) and that setting is not 1, ``up`` says so once, and names
the routers installed here that change routes without that race: HAProxy first (weights change
without a reload: no resets, no latency bump, every WebSocket kept in one process), then nginx
(its reloads keep the listening socket: no resets; WebSockets are kept too, but each reload that
finds some open leaves an old worker process, at most 16, decision 0425). Caddy keeps
WebSockets across reloads as well (decision 0460): they are not what the note is about. Anyone
who chose a kind hears nothing.

Worked examples (``note(kind, chosen, installed, migrate_req)``)::

    "caddy", False, {"haproxy", "nginx"}, "0"   -> the reset note, advising kind = "haproxy"
    "caddy", False, {"nginx"},            None  -> the reset note (kernel < 5.14), advising nginx
    "caddy", False, set(),                "0"   -> the reset note, advising the sysctl only
    "caddy", False, {"haproxy"},          "1"   -> None (the kernel hands queued connections over)
    "caddy", True,  {"haproxy"},          "0"   -> None (a kind that was chosen)
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from nonstop.drivers.router.haproxy_process import SEARCHED as HAPROXY
from nonstop.drivers.router.nginx_process import SEARCHED as NGINX
from nonstop.drivers.router.process import find_binary
from nonstop.errors import RouterError

MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")
PREFERRED = {
    "haproxy": "HAProxy is installed here and changes weights without reloading",
    "nginx": "nginx is installed here and reloads on the same listening socket",
}
"""The routers ``up`` may advise instead of a default Caddy, best first, and why."""


def note(
    kind: str, chosen: bool, installed: Collection[str], migrate_req: str | None
) -> str | None:
    """One line for ``up`` about the router on this machine, or None when there is nothing to
    say (see the module docstring)."""
    if kind != "caddy" or chosen or migrate_req == "1":
        return None
    setting = (
        "net.ipv4.tcp_migrate_req is 0"
        if migrate_req is not None
        else "this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14+)"
    )
    text = (
        f"router: Caddy (the default). Each routing change reloads it, and {setting}: under "
        f"heavy keep-alive load a change can reset a few connections (docs/router.md, Reloads)."
    )
    better = next((name for name in PREFERRED if name in installed), None)
    if better is not None:
        return f'{text} {PREFERRED[better]}: set [router] kind = "{better}" to use it.'
    if migrate_req is not None:
        return f"{text} `sysctl -w net.ipv4.tcp_migrate_req=1` (as root) prevents it."
    return text


def installed_routers() -> set[str]:
    """The router kinds other than Caddy whose binary is found here."""
    found = set()
    for kind, searched in (("haproxy", HAPROXY), ("nginx", NGINX)):
        try:
            find_binary(None, searched, "")
        except RouterError:
            continue
        found.add(kind)
    return found


def migrate_req() -> str | None:
    """``net.ipv4.tcp_migrate_req`` ("0" or "1"), None when the kernel does not have it."""
    try:
        return MIGRATE_REQ.read_text().strip()
    except OSError:
        return None


def startup_note(kind: str, chosen: bool) -> str | None:
    """:func:`note` for this machine."""
    if kind != "caddy" or chosen:
        return None
    return note(kind, chosen, installed_routers(), migrate_req())
