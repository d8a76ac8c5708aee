"""Finding and spawning HAProxy, and talking to its runtime API (the admin socket).

Recognising our process later (pid + start time), spawning, atomic writes and the short socket
directory are router-neutral (process.py).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from nonstop.drivers.router import process
from nonstop.drivers.router.admin import AdminUnavailable
from nonstop.errors import RouterError, explain

SEARCHED = ["haproxy", "/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]

OK_REPLIES = ("", "New server registered.", "Server deleted.")
"""What the runtime API answers to a command that worked; anything else is its error text."""


HAPROXY_PATH_MAX = 97
"""Longest unix socket path HAProxy 2.6 accepts in its config (it binds a temporary name with a
suffix first, then renames it: 107 bytes less room for the suffix)."""

LONGEST_SOCKET = "/haproxy-admin.sock"


def socket_dir(state_dir: Path) -> Path:
    """Where HAProxy's admin socket goes: ``state_dir`` when its path fits in the 97 bytes
    HAProxy allows, else the same short private directory any router would use."""
    return process.socket_dir(state_dir, LONGEST_SOCKET, HAPROXY_PATH_MAX)


def check_socket_path(path: Path) -> Path:
    return process.check_socket_path(path, HAPROXY_PATH_MAX, "HAProxy")


def find_haproxy(explicit: Path | None = None) -> Path:
    """The haproxy binary: ``explicit``, else on PATH, else in /usr/sbin or /usr/local/sbin."""
    return process.find_binary(
        explicit,
        list(SEARCHED),
        'install the system package (apt-get install haproxy) or use [router] kind = "caddy"',
    )


def haproxy_version(binary: Path) -> str:
    """``haproxy -v``'s version word (``2.6.12-1+deb12u4``)."""
    words = process.binary_version(binary, "-v")
    return words[2] if len(words) > 2 else " ".join(words)


def check_config(binary: Path, config: Path) -> None:
    """``haproxy -c``: a config HAProxy refuses is a RouterError quoting its alerts."""
    done = subprocess.run(
        [str(binary), "-c", "-q", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        alerts = [line for line in done.stderr.splitlines() if "ALERT" in line]
        raise RouterError(f"haproxy refused {config}: {'; '.join(alerts) or done.stderr.strip()}")


def last_alert(log: Path) -> str:
    """The cause HAProxy gave for its last failure: its last ``[ALERT]`` line that is not the
    closing "... Exiting." (which follows the specific one, such as "cannot bind socket"),
    without the ``[ALERT] (pid) :`` prefix; else its last line."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    alerts = [line for line in lines if line.startswith("[ALERT]")]
    specific = [line for line in alerts if not line.rstrip().endswith("Exiting.")]
    last = (specific or alerts or lines or ["(empty log)"])[-1]
    return last.split(") : ", 1)[1] if last.startswith("[ALERT]") and ") : " in last else last


async def run_command(socket_path: Path, command: str, *, timeout: float = 5.0) -> str:
    """One runtime-API command on its own connection; returns HAProxy's reply, stripped.

    AdminUnavailable (worth retrying) when the socket could not be reached (nothing was sent),
    or when a read-only command (``show ...``) broke off or got no answer; RouterError when a
    command that changes something broke off after it was sent (it may have taken effect)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path)), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise AdminUnavailable(explain(exc, f"router admin socket {socket_path}")) from exc
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError) as exc:
        error = AdminUnavailable if command.startswith("show ") else RouterError
        why = explain(exc, f"router admin socket {socket_path}")
        raise error(f"haproxy runtime API {command!r}: {why}") from exc
    finally:
        writer.close()
    text = reply.decode("utf-8", "replace").strip()
    if not text and command.startswith("show "):  # every "show" says something: cut off
        raise AdminUnavailable(f"haproxy runtime API {command!r}: connection closed unanswered")
    return text
