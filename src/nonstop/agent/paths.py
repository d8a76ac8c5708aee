"""Where a project's agent keeps its files: everything under ``<project>/.nonstop/``."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nonstop.errors import StateError

STATE_DIR_NAME = ".nonstop"
UNIX_PATH_MAX = 107
"""Longest unix socket path Linux takes (sun_path is 108 bytes with its NUL)."""


@dataclass(frozen=True, slots=True)
class Paths:
    project: Path

    @property
    def state(self) -> Path:
        return self.project / STATE_DIR_NAME

    @property
    def config(self) -> Path:
        return self.project / "nonstop.toml"

    @property
    def socket(self) -> Path:
        """``.nonstop/agent.sock``, or when that path is too long for a unix socket,
        ``/tmp/nonstop-<uid>/<hash of the state dir>/agent.sock``: it depends only on the uid
        and the state dir, so the CLI finds what the agent bound from any shell."""
        default = self.state / "agent.sock"
        if len(os.fsencode(default)) <= UNIX_PATH_MAX:
            return default
        import hashlib  # here: every CLI command computes this path, few need the hash

        digest = hashlib.sha256(os.fsencode(self.state)).hexdigest()[:16]
        return Path("/tmp") / f"nonstop-{os.getuid()}" / f"agent-{digest}" / "agent.sock"

    @property
    def token(self) -> Path:
        return self.state / "token"

    @property
    def pidfile(self) -> Path:
        return self.state / "agent.pid"

    @property
    def lock(self) -> Path:
        return self.state / "agent.lock"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def agent_log(self) -> Path:
        return self.logs / "agent.log"

    def ensure(self) -> None:
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logs.mkdir(mode=0o700, exist_ok=True)

    def ensure_socket_dir(self) -> None:
        """Create the short socket directory when the socket lives there; refuse one that
        is not ours or that others can enter."""
        folder = self.socket.parent
        if folder == self.state:
            return
        for level in (folder.parent, folder):
            level.mkdir(mode=0o700, exist_ok=True)
            info = level.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
                raise StateError(f"{level} must be a directory owned by you with mode 0700")

    def read_or_create_token(self) -> str:
        """The API token (0600), created once and kept across agent restarts."""
        import secrets

        self.ensure()
        try:
            return self.token.read_text().strip()
        except FileNotFoundError:
            pass
        token = secrets.token_urlsafe(32)
        fd = os.open(self.token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token)
        return token

    def read_token(self) -> str | None:
        try:
            return self.token.read_text().strip()
        except OSError:
            return None


def find_project(start: Path | None = None) -> Path:
    """The nearest directory (from ``start`` upward) holding nonstop.toml, else ``start``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "nonstop.toml").is_file():
            return candidate
    return here
