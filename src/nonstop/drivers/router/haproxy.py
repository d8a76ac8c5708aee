"""The HAProxy router: every routing change through the runtime API, never a reload.

Caddy applies a table by reloading its whole config, which closes idle keep-alive connections:
a client that sends on one at that instant sees a reset. HAProxy's runtime API adds, reweights,
drains and deletes servers in place, so client connections are never touched.

Files in ``state_dir``::

    haproxy-admin.sock    runtime API (unix stream socket, 0600, level admin)*
    haproxy.pid           {"pid", "start_time"} of the HAProxy we started, for adoption
    route-table.json      the last table applied: a restarted HAProxy comes back routing it
    haproxy.cfg           the config HAProxy was last started with (the table of that moment)
    no-upstream.txt       the body of the 503 answered when no upstream is in rotation
    probe.map             the hash the table probe answers (set through the runtime API)
    logs/haproxy.log      HAProxy's own output

    * in a short private directory instead when ``state_dir`` is too deep for a unix socket path
      (see ``haproxy_process.socket_dir``).

``apply(table)`` reads the backend (``show servers state``), then adds and enables new servers,
reweights kept ones, and only then puts leaving ones into maintenance: their open requests and
streams finish there, ``in_flight()`` counts them, and they are deleted once idle (or their
sessions are shut down after ``drain_timeout``). HAProxy runs in its own session and outlives
the agent; a new agent's ``start()`` adopts it (same pid and start time, admin socket answers)
and applies the saved table through the runtime API again: no restart, no reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from nonstop.drivers.router.admin import (
    AdminUnavailable,
    confirm_listener,
    table_hash,
    with_retries,
)
from nonstop.drivers.router.base import RequestEvent, RouteTable
from nonstop.drivers.router.caddy import load_table, table_to_dict
from nonstop.drivers.router.caddy_config import validate_listen
from nonstop.drivers.router.caddy_process import (
    ProcessRecord,
    kill,
    wait_started,
    write_atomic,
)
from nonstop.drivers.router.haproxy_config import (
    BACKEND,
    NO_UPSTREAM_BODY,
    PROBE_KEY,
    Files,
    HAProxyTuning,
    build_config,
    desired_servers,
    parse_servers_state,
    parse_sessions,
    plan_changes,
    probe_map_text,
    server_options,
)
from nonstop.drivers.router.haproxy_log import LogCounters, RingReader
from nonstop.drivers.router.haproxy_process import (
    OK_REPLIES,
    check_config,
    check_socket_path,
    find_haproxy,
    haproxy_version,
    last_alert,
    run_command,
    socket_dir,
    spawn,
)
from nonstop.errors import RouterError


class HAProxyRouter:
    """Router port over a HAProxy process; see the module docstring for the files it keeps."""

    def __init__(
        self,
        state_dir: Path,
        listen: str,
        *,
        drain_timeout: float = 30.0,
        retries: int = 3,
        connect_timeout: float = 1.0,
        upstream_timeout: float = 30.0,
        health_path: str | None = None,
        health_interval: float = 0.5,
        health_timeout: float = 1.0,
        haproxy_binary: Path | None = None,
        event_queue_size: int = 10_000,
        start_timeout: float = 15.0,
        confirm_timeout: float = 5.0,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.listen = validate_listen(listen)
        self.tuning = HAProxyTuning(
            drain_timeout=drain_timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            upstream_timeout=upstream_timeout,
            health_path=health_path,
            health_interval=health_interval,
            health_timeout=health_timeout,
        )
        self.start_timeout = start_timeout
        self.confirm_timeout = confirm_timeout
        self._binary = haproxy_binary
        sockets = socket_dir(self.state_dir)
        self.admin_socket = check_socket_path(sockets / "haproxy-admin.sock")
        self.pid_file = self.state_dir / "haproxy.pid"
        self.table_file = self.state_dir / "route-table.json"
        self.config_file = self.state_dir / "haproxy.cfg"
        self.body_file = self.state_dir / "no-upstream.txt"
        self.probe_map = self.state_dir / "probe.map"
        self.log_file = self.state_dir / "logs" / "haproxy.log"
        self.version: str | None = None
        self._listener = RingReader(self.admin_socket, queue_size=event_queue_size)
        self._leaving: dict[str, float] = {}
        """Servers out of the table but maybe still serving -> monotonic drain deadline."""
        self._lock = asyncio.Lock()

    # -- the Router port ---------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            record = ProcessRecord.load(self.pid_file)
            # Adopt only the HAProxy we recorded (same pid, same start time, a haproxy binary):
            # a socket that merely answers is not a router (decision 0332).
            running = record is not None and record.running() and record.runs("haproxy")
            # A HAProxy of ours that is up but still starting gets the whole start timeout.
            if running and await self._wait_admin(self.start_timeout):
                if await self._serves_probe_map():
                    await self._adopt()
                else:
                    # Started by an earlier version without what this one needs (the probe
                    # map): a new HAProxy takes the listener over and the old one soft-stops,
                    # as on any router restart.
                    await self._spawn(replacing=record)
            else:
                if record is not None and running:
                    kill(record, signal.SIGKILL)  # ours, alive, but its admin socket is dead
                    await self._exited(record, 5.0)
                await self._spawn()
            self._listener.start()

    async def apply(self, table: RouteTable) -> None:
        desired_servers(table)  # refuse a bad table before anything is written
        async with self._lock:
            # Durable first (invariant 4): a HAProxy restarted after this point routes ``table``.
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(self.table_file, json.dumps(table_to_dict(table), indent=2))
            except OSError as exc:
                raise RouterError(
                    f"could not save the route table to {self.table_file}: {exc}"
                ) from exc
            await self._sync(table)
            await confirm_listener("haproxy", self.listen, table, within=self.confirm_timeout)

    async def in_flight(self) -> dict[str, int]:
        """Current sessions (+ queued requests) per upstream address from ``show stat``. A server
        taken out of the table stays listed with its count until it is idle; then it is deleted
        and disappears (read it as 0)."""
        async with self._lock:
            sessions = await self._reap()
        return {name: n for name, n in sessions.items() if n > 0 or name not in self._leaving}

    async def alive(self) -> bool:
        record = ProcessRecord.load(self.pid_file)
        if record is not None and not record.running():
            return False
        return await self._wait_admin(0.0)

    async def stop(self) -> None:
        """SIGUSR1 (soft stop: HAProxy stops listening, finishes open requests, and exits; at
        the latest after ``hard-stop-after`` = drain timeout), then SIGTERM, then SIGKILL, each
        only if the process is still there."""
        async with self._lock:
            await self._listener.close()  # an open ``show events -w`` would hold the soft stop
            record = ProcessRecord.load(self.pid_file)
            if record is not None:
                for sig, wait in (
                    (signal.SIGUSR1, self.tuning.drain_timeout + 5),
                    (signal.SIGTERM, 5.0),
                    (signal.SIGKILL, 5.0),
                ):
                    kill(record, sig)
                    if await self._exited(record, wait):
                        break
            self.pid_file.unlink(missing_ok=True)
            self._leaving.clear()

    async def close(self) -> None:
        """Let go of HAProxy without stopping it (the agent exits; traffic keeps flowing)."""
        async with self._lock:
            await self._listener.close()

    async def events(self) -> AsyncIterator[RequestEvent]:
        """One consumer at a time (two would split the events). The stream outlives HAProxy
        restarts: the reader reconnects to the new HAProxy and reads its ring from the start."""
        async for event in self._listener.events():
            yield event

    # -- extras ----------------------------------------------------------------------------------

    @property
    def stream(self) -> LogCounters:
        """Request-log counters: received, dropped (slow consumer), ignored, connections."""
        return self._listener.counters

    @property
    def pid(self) -> int | None:
        record = ProcessRecord.load(self.pid_file)
        return record.pid if record is not None and record.running() else None

    def last_table(self) -> RouteTable:
        """The table last applied (empty before the first apply)."""
        return load_table(self.table_file)

    async def command(self, line: str) -> str:
        """One runtime-API command (``show servers state``, ``show stat`` ...); its reply."""
        return await with_retries(
            lambda timeout: self._command_once(line, timeout),
            what=f"haproxy runtime API {line!r}",
            timeout=5.0,
        )

    async def _command_once(self, line: str, timeout: float) -> str:
        if not self.admin_socket.exists():
            raise AdminUnavailable(f"haproxy admin socket {self.admin_socket} does not exist")
        return await run_command(self.admin_socket, line, timeout=timeout)

    # -- internals -------------------------------------------------------------------------------

    async def _sync(self, table: RouteTable) -> None:
        """Make the backend's servers and weights equal ``table`` through the runtime API."""
        desired = desired_servers(table)
        current = parse_servers_state(await self.command(f"show servers state {BACKEND}"))
        plan = plan_changes(desired, current, server_options(self.tuning))
        commands = [*plan.commands, f"set map {self.probe_map} {PROBE_KEY} {table_hash(table)}"]
        for line in commands:
            reply = await self.command(line)
            if reply not in OK_REPLIES:
                raise RouterError(f"haproxy refused {line!r}: {reply}")
        deadline = time.monotonic() + self.tuning.drain_timeout
        for server in current:  # leaving now, or left under a previous agent
            if server.name not in desired:
                self._leaving.setdefault(server.name, deadline)
        for name in desired:
            self._leaving.pop(name, None)
        await self._reap()

    async def _reap(self) -> dict[str, int]:
        """Delete leaving servers that are idle, or past their drain deadline (their sessions
        are shut down first). Returns the sessions per server read before deleting."""
        sessions = parse_sessions(await self.command("show stat"))
        for name, deadline in list(self._leaving.items()):
            if name not in sessions:
                del self._leaving[name]
                continue
            if sessions[name] > 0:
                if time.monotonic() < deadline:
                    continue
                await self.command(f"shutdown sessions server {BACKEND}/{name}")
            reply = await self.command(f"del server {BACKEND}/{name}")
            # Refused while it still holds an idle server connection: tried again next time.
            if reply in OK_REPLIES or reply == "No such server.":
                del self._leaving[name]
                sessions.pop(name, None)
        return sessions

    async def _adopt(self) -> None:
        """Re-apply the saved table through the runtime API (changing nothing when HAProxy
        already routes it). Without the table file nothing is touched: adopting must never empty
        a backend that is serving."""
        self._leaving.clear()
        if self.table_file.exists():
            table = self.last_table()
            await self._sync(table)
            await confirm_listener("haproxy", self.listen, table, within=self.confirm_timeout)

    async def _serves_probe_map(self) -> bool:
        """Whether the running HAProxy loaded our probe map (``show map`` lists its file)."""
        return str(self.probe_map) in await self.command("show map")

    async def _spawn(self, replacing: ProcessRecord | None = None) -> None:
        """Start a HAProxy routing the saved table; with ``replacing``, the new one is started
        with ``-sf`` so it binds the listener first and then soft-stops the old process."""
        binary = find_haproxy(self._binary)
        self.version = await asyncio.to_thread(haproxy_version, binary)
        self.admin_socket.unlink(missing_ok=True)  # left behind by a HAProxy that was killed
        self._listener.mark_fresh()  # whatever answers on the socket from now on is new
        write_atomic(self.body_file, NO_UPSTREAM_BODY)
        table = self.last_table()
        write_atomic(self.probe_map, probe_map_text(table_hash(table)))
        files = Files(self.admin_socket, self.body_file, self.probe_map)
        servers = desired_servers(table)
        text = build_config(servers, listen=self.listen, files=files, tuning=self.tuning)
        write_atomic(self.config_file, text)
        await asyncio.to_thread(check_config, binary, self.config_file)
        finish = (replacing.pid,) if replacing is not None else ()
        pid = await asyncio.to_thread(spawn, binary, self.config_file, self.log_file, finish)
        self._leaving.clear()
        await wait_started(
            "haproxy",
            pid,
            self.pid_file,
            lambda: self._wait_admin(0.0),
            listen=self.listen,
            admin_socket=self.admin_socket,
            log=self.log_file,
            log_error=last_alert,
            timeout=self.start_timeout,
        )

    async def _wait_admin(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(RouterError):
                await self._command_once("show info", 2.0)
                return True
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
