"""End-to-end harness: a project with the sample app, and a real agent (real Caddy, real
processes) started as a separate process, as `nonstop up --detach` does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nonstop.agent.client import AgentClient
from nonstop.agent.paths import Paths
from nonstop.drivers.router.registry import ROUTERS
from nonstop.errors import NonstopError

BASE_CONFIG = """\
[app]
name = "shop"
command = "{python} app.py --port {{port}}"
replicas = 2
stop_timeout = "3s"
drain_timeout = "5s"

[health]
path = "/health"
interval = "100ms"
start_period = "{start_period}"

[router]
kind = "{router}"
listen = "127.0.0.1:{port}"

[strategy]
kind = "bluegreen"

[strategy.bluegreen]
keep_previous = "120s"
{bluegreen}

[watch]
duration = "{watch}"
max_error_rate = 0.02
min_requests = 20
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ROUTER_KINDS = list(ROUTERS)
"""Every router kind: a scenario that does not depend on the router is parametrized over these
(``@pytest.mark.parametrize("router_kind", ROUTER_KINDS)``, conftest.py)."""


@dataclass
class Project:
    root: Path
    port: int
    router: str = "caddy"

    @property
    def paths(self) -> Paths:
        return Paths(self.root)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def write_config(
        self, *, bluegreen: str = "", watch: str = "1s", start_period: str = "10s", extra: str = ""
    ) -> None:
        text = BASE_CONFIG.format(
            python=sys.executable,
            port=self.port,
            router=self.router,
            bluegreen=bluegreen,
            watch=watch,
            start_period=start_period,
        )
        (self.root / "nonstop.toml").write_text(text + extra)

    def config(self) -> dict[str, Any]:
        from nonstop.config import load_config, to_wire

        return to_wire(load_config(self.paths.config))

    def cli(
        self, *args: str, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "NONSTOP_PROJECT": str(self.root)}
        result = subprocess.run(
            [sys.executable, "-m", "nonstop.cli", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"nonstop {' '.join(args)} -> {result.returncode}\n{result.stderr}"
            )
        return result


class AgentProcess:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.process: subprocess.Popen[bytes] | None = None
        self.client = AgentClient(project.paths, timeout=30)

    def start(self, env: dict[str, str] | None = None, *, wait: bool = True) -> None:
        paths = self.project.paths
        paths.ensure()
        log = paths.agent_log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nonstop.agent", str(self.project.root)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        log.close()
        if wait:
            self.wait_up()

    def wait_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited {self.process.returncode}: {self.log_tail()}")
            if self.client.ping():
                return
            time.sleep(0.05)
        raise AssertionError(f"agent did not come up: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.project.paths.agent_log.read_text()[-3000:]
        except FileNotFoundError:
            return ""

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.call(method, path, body)

    def deploy(self, release: str, **env: str) -> dict[str, Any]:
        body = {
            "release": release,
            "path": str(self.project.root),
            "env": {"VERSION": release, **env},
            "config": self.project.config(),
        }
        return self.call("POST", "/v1/deploy", body)  # type: ignore[no-any-return]

    def wait_rollout(self, rollout_id: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row: dict[str, Any] = self.call("GET", f"/v1/rollouts/{rollout_id}")
            if row["status"] != "running":
                return row
            time.sleep(0.1)
        raise AssertionError(f"rollout {rollout_id} still running: {self.log_tail()}")

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/v1/status")  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        """Stop everything the project started, whatever state the test left it in."""
        with contextlib.suppress(NonstopError, AssertionError):
            if self.client.ping():
                self.call("POST", "/v1/shutdown", {"stop_instances": True})
                if self.process is not None:
                    self.process.wait(30)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        kill_leftovers(self.project.paths)


def kill_leftovers(paths: Paths) -> None:
    """SIGKILL any process group whose environment names this project's state dir."""
    marker = f"NONSTOP_STATE_DIR={paths.state}\0".encode()
    router_pid = paths.state / "router"
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes() + b"\0":
                pids.add(int(entry.name))
    for pidfile in router_pid.glob("*.pid") if router_pid.exists() else []:
        with contextlib.suppress(ValueError, OSError):
            data = pidfile.read_text().strip()
            pids.add(int(json.loads(data)["pid"]) if data.startswith("{") else int(data.split()[0]))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
