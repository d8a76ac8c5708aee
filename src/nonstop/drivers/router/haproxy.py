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
    probe.map             the hash the table probe answers, and the front health state
                          (``front_health``), both set through the runtime API
    front                 ``serving`` or ``draining``: the front health state a restart keeps
    logs/haproxy.log      HAProxy's own output

    * in a short private directory instead when ``state_dir`` is too deep for a unix socket path
      (see ``haproxy_process.socket_dir``).

``apply(table)`` reads the backend (``show servers state``), then adds and enables new servers,
reweights kept ones, and only then puts leaving ones into maintenance, and does the same in the
panic backend (the same servers, unchecked: decision 0570): their open requests and
streams finish there, ``in_flight()`` counts them, and they are deleted once idle. A change
never closes a connection: established tunnels (websockets) of every server, leaving ones
included, run on until the client or the instance ends them (the engine stops a drained
instance at its drain deadline); only with ``stream_grace`` set are a leaving server's sessions
shut down that long after it left (decision 0460). HAProxy runs in its own session and outlives
the agent; a new agent's ``start()`` adopts it (same pid and start time, admin socket answers)
and applies the saved table through the runtime API again: no restart, no reload.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from pathlib import Path

from nonstop.drivers.router.admin import AdminUnavailable, table_hash, with_retries
from nonstop.drivers.router.base import RouteTable
from nonstop.drivers.router.haproxy_config import (
    BACKEND,
    BACKENDS,
    DRAINING,
    FRONT_KEY,
    PANIC_BACKEND,
    PROBE_KEY,
    SERVING,
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
from nonstop.drivers.router.haproxy_log import RingReader
from nonstop.drivers.router.haproxy_process import (
    OK_REPLIES,
    check_config,
    check_socket_path,
    find_haproxy,
    haproxy_version,
    last_alert,
    run_command,
    socket_dir,
)
from nonstop.drivers.router.managed import ManagedRouter
from nonstop.drivers.router.process import ProcessRecord, kill, spawn, write_atomic
from nonstop.drivers.router.settings import RouterSettings
from nonstop.drivers.router.table import NO_UPSTREAM_BODY
from nonstop.errors import RouterError


class HAProxyRouter(ManagedRouter):
    """Router port over a HAProxy process; see the module docstring for the files it keeps."""

    program = "haproxy"

    def __init__(
        self,
        state_dir: Path,
        settings: RouterSettings,
        *,
        retries: int = 3,
        connect_timeout: float = 1.0,
    ) -> None:
        super().__init__(state_dir, settings)
        self.tuning = HAProxyTuning.like(settings, retries=retries, connect_timeout=connect_timeout)
        self.admin_socket = check_socket_path(socket_dir(self.state_dir) / "haproxy-admin.sock")
        self.config_file = self.state_dir / "haproxy.cfg"
        self.body_file = self.state_dir / "no-upstream.txt"
        self.probe_map = self.state_dir / "probe.map"
        self.front_file = self.state_dir / "front"
        self._listener = RingReader(self.admin_socket, self.queue)
        self._leaving: dict[str, float] = {}
        """Servers out of the table but maybe still serving -> monotonic time after which their
        sessions are shut down (infinity without ``stream_grace``)."""

    async def in_flight(self) -> dict[str, int]:
        """Current sessions (+ queued requests) per upstream address from ``show stat``. A server
        taken out of the table stays listed with its count until it is idle; then it is deleted
        and disappears (read it as 0)."""
        async with self._lock:
            sessions = await self._reap()
        return {name: n for name, n in sessions.items() if n > 0 or name not in self._leaving}

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

    # -- the driver's part -----------------------------------------------------------------------

    async def _ping(self, timeout: float) -> None:
        await self._command_once("show info", timeout)

    def _check(self, table: RouteTable) -> None:
        desired_servers(table)

    async def _load(self, table: RouteTable) -> None:
        await self._sync(table)

    async def _after_start(self) -> None:
        self._listener.start()

    async def _can_adopt(self) -> bool:
        """A HAProxy started by an earlier version may lack the probe map (``set map`` would
        fail on every apply; ``show map`` lists the file of every map it loaded) or the panic
        backend (``show backend`` lists them)."""
        if str(self.probe_map) not in await self.command("show map"):
            return False
        return PANIC_BACKEND in (await self.command("show backend")).split()

    async def _adopt(self) -> None:
        self._leaving.clear()
        await super()._adopt()

    async def _spawn(self, replacing: ProcessRecord | None) -> None:
        """A HAProxy routing the saved table; with ``replacing``, started with ``-sf`` so it
        binds the listener first and then soft-stops the old process."""
        binary = find_haproxy(self.settings.binary)
        self.version = await asyncio.to_thread(haproxy_version, binary)
        self.admin_socket.unlink(missing_ok=True)  # left behind by a HAProxy that was killed
        self._listener.mark_fresh()  # whatever answers on the socket from now on is new
        write_atomic(self.body_file, NO_UPSTREAM_BODY)
        table = self.last_table()
        write_atomic(self.probe_map, probe_map_text(table_hash(table), self.front_state()))
        files = Files(self.admin_socket, self.body_file, self.probe_map)
        servers = desired_servers(table)
        front = self.settings.front_health
        text = build_config(
            servers, listen=self.listen, files=files, tuning=self.tuning, front_health=front
        )
        write_atomic(self.config_file, text)
        await asyncio.to_thread(check_config, binary, self.config_file)
        argv = [str(binary), "-db", "-f", str(self.config_file)]  # -db: foreground
        if replacing is not None:
            argv += ["-sf", str(replacing.pid)]
        pid = await asyncio.to_thread(spawn, argv, self.log_file, cwd=self.config_file.parent)
        self._leaving.clear()
        await self._wait_spawned(pid)

    def front_state(self) -> str:
        """``serving`` or ``draining``: what the front health path says (kept across restarts)."""
        try:
            return DRAINING if self.front_file.read_text().strip() == DRAINING else SERVING
        except FileNotFoundError:
            return SERVING

    async def set_front(self, serving: bool) -> bool:
        """The front health path answers 200 (``serving``) or 503 (drained) from now on; True
        when that changed. Saved first, so a HAProxy restarted after this answers the same."""
        state = SERVING if serving else DRAINING
        changed = self.front_state() != state
        write_atomic(self.front_file, state)
        line = f"set map {self.probe_map} {FRONT_KEY} {state}"
        async with self._lock:
            reply = await self.command(line)
        if reply not in OK_REPLIES:
            raise RouterError(f"haproxy refused {line!r}: {reply}")
        return changed

    def _last_error(self, log: Path) -> str:
        return last_alert(log)

    async def _soft_stop(self, record: ProcessRecord | None) -> None:
        """SIGUSR1: HAProxy stops listening, finishes open requests, and exits (at the latest
        after ``hard-stop-after`` = drain timeout)."""
        await self._listener.close()  # an open ``show events -w`` would hold the soft stop
        if record is not None:
            kill(record, signal.SIGUSR1)

    async def _detach(self) -> None:
        await self._listener.close()
        self._leaving.clear()

    async def _sync(self, table: RouteTable) -> None:
        """Make the backend's servers and weights equal ``table`` through the runtime API."""
        desired = desired_servers(table)
        current = parse_servers_state(await self.command(f"show servers state {BACKEND}"))
        plan = plan_changes(desired, current, server_options(self.tuning))
        twins = parse_servers_state(await self.command(f"show servers state {PANIC_BACKEND}"))
        panic = plan_changes(desired, twins, backend=PANIC_BACKEND)
        commands = [
            *plan.commands,
            *panic.commands,
            f"set map {self.probe_map} {PROBE_KEY} {table_hash(table)}",
        ]
        for line in commands:
            reply = await self.command(line)
            if reply not in OK_REPLIES:
                raise RouterError(f"haproxy refused {line!r}: {reply}")
        grace = self.tuning.stream_grace
        deadline = math.inf if grace is None else time.monotonic() + grace
        for server in [*current, *twins]:  # leaving now, or left under a previous agent
            if server.name not in desired:
                self._leaving.setdefault(server.name, deadline)
        for name in desired:
            self._leaving.pop(name, None)
        await self._reap()

    async def _reap(self) -> dict[str, int]:
        """Delete leaving servers that are idle, or past their ``stream_grace`` (their sessions
        are shut down first), from both backends. Returns the sessions per server (both
        backends summed) read before deleting."""
        text = await self.command("show stat")
        by_backend = {backend: parse_sessions(text, backend) for backend in BACKENDS}
        for name, deadline in list(self._leaving.items()):
            left = [b for b, sessions in by_backend.items() if name in sessions]
            for backend in left:
                if await self._delete(backend, name, by_backend[backend][name], deadline):
                    del by_backend[backend][name]
            if not any(name in sessions for sessions in by_backend.values()):
                del self._leaving[name]
        total: dict[str, int] = {}
        for sessions in by_backend.values():
            for name, count in sessions.items():
                total[name] = total.get(name, 0) + count
        return total

    async def _delete(self, backend: str, name: str, sessions: int, deadline: float) -> bool:
        """Delete a leaving server of ``backend`` once idle or past ``deadline``; True if gone."""
        if sessions > 0:
            if time.monotonic() < deadline:
                return False
            await self.command(f"shutdown sessions server {backend}/{name}")
        reply = await self.command(f"del server {backend}/{name}")
        # Refused while it still holds an idle server connection: tried again next time.
        return reply in OK_REPLIES or reply == "No such server."
