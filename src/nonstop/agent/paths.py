"""Where a project's agent keeps its files: everything under ``<project>/.nonstop/``."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

STATE_DIR_NAME = ".nonstop"


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
        return self.state / "agent.sock"

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

    def read_or_create_token(self) -> str:
        """The API token (0600), created once and kept across agent restarts."""
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
