"""A private, throwaway PostgreSQL server for tests and benchmarks.

It lives in a temporary directory, listens on a free TCP port on 127.0.0.1 and keeps its unix
socket in that directory too, so it never touches a server someone else runs. ``initdb`` refuses
to run as root: when we are root, the server runs as the unprivileged ``postgres`` user (created by
Debian's postgresql packages; when it is missing, a system user ``nonstop-pg`` is created with
useradd) and the directory is handed over to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nonstop.errors import DriverError

CANDIDATE_BIN_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)


def find_pg_bin(name: str) -> str | None:
    """Path of ``initdb``/``pg_ctl``: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    for directory in CANDIDATE_BIN_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_account() -> pwd.struct_passwd:
    """The unprivileged account the server runs as when we are root."""
    for name in ("postgres", "nonstop-pg"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "nonstop-pg"],
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        raise DriverError(
            "initdb refuses to run as root and there is no `postgres` user; create an "
            f"unprivileged user (useradd failed: {created.stderr.strip()})"
        )
    return pwd.getpwnam("nonstop-pg")


@dataclass
class TempPostgres:
    """``start()`` runs initdb and pg_ctl start; ``stop()`` stops it (fast shutdown)."""

    root: Path
    initdb: str
    pg_ctl: str
    port: int = 0
    user: str = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str]) -> None:
        run_as = server_account().pw_name if os.geteuid() == 0 else None
        result = subprocess.run(
            args, user=run_as, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise DriverError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            account = server_account()
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.port = self.port or free_port()
        self._run(
            [
                self.initdb,
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c shared_buffers=128MB -c max_connections=50"
        )
        log = self.root / "server.log"
        self._run(
            [
                self.pg_ctl,
                "-D",
                str(self.data_dir),
                "-o",
                options,
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self) -> None:
        if self.data_dir.exists():
            self._run([self.pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
