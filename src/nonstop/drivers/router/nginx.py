"""The nginx router, from the system's package: every change a graceful reload (SIGHUP).

Files in ``state_dir``::

    nginx.conf            the config nginx runs (rewritten on every apply that changes it)
    nginx.pid             {"pid", "start_time"} of the nginx master we started, for adoption
    route-table.json      the last table applied: a restarted nginx comes back routing it
    nginx-home/           nginx's prefix: its own pid file (nginx-master.pid), temp dirs
    nginx-events.sock     the agent's request-log socket (unix datagrams, 0600)*
    logs/nginx.log        nginx's own output (its error log)

    * in a short private directory instead when ``state_dir`` is too deep for a unix socket path
      (see ``process.socket_dir``).

``apply(table)`` writes the config for the table (nginx_config.py), has nginx check it
(``nginx -t``) and sends SIGHUP: new workers route the new table, old workers finish the requests
and streams they hold (bounded only with ``stream_grace``, decision 0460; no more than
``tuning.old_workers`` of them linger past the drain timeout: those beyond holding the fewest
connections are stopped, decision 0425). nginx has no admin API: ``in_flight()`` counts the
established connections of nginx's processes to each upstream in /proc (upstream connections
are not kept alive, so one is one request or stream).
nginx runs in its own session and outlives the agent; a new agent's ``start()`` adopts it (same
pid and start time, an nginx binary, its own pid file naming it) and reloads the saved table, so
new workers log to the new agent's socket.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from nonstop.drivers.router import process
from nonstop.drivers.router.base import RouteTable
from nonstop.drivers.router.managed import ManagedRouter
from nonstop.drivers.router.nginx_config import NginxFiles, NginxTuning, build_config
from nonstop.drivers.router.nginx_log import SyslogListener
from nonstop.drivers.router.nginx_process import (
    check_config,
    connections_by_process,
    find_nginx,
    kill_all,
    last_error,
    members,
    nginx_version,
    old_workers,
    open_connections,
    serving_workers,
    terminate,
    to_stop,
)
from nonstop.drivers.router.process import ProcessRecord, kill
from nonstop.drivers.router.settings import RouterSettings
from nonstop.drivers.router.table import validate_table
from nonstop.errors import RouterError

EVENTS_SOCKET = "nginx-events.sock"


class NginxRouter(ManagedRouter):
    """Router port over an nginx master process; see the module docstring for its files."""

    program = "nginx"

    def __init__(self, state_dir: Path, settings: RouterSettings) -> None:
        super().__init__(state_dir, settings)
        self.tuning = NginxTuning.like(settings)
        sockets = process.socket_dir(self.state_dir, "/" + EVENTS_SOCKET)
        self.admin_socket = process.check_socket_path(sockets / EVENTS_SOCKET)
        """nginx has no admin socket; the socket the agent owns is its request-log socket."""
        self.config_file = self.state_dir / "nginx.conf"
        self.prefix = self.state_dir / "nginx-home"
        self.master_pid_file = self.prefix / "nginx-master.pid"
        self._listener = SyslogListener(self.admin_socket, self.queue)
        self._files = NginxFiles(self.prefix, self.admin_socket)
        self._addresses: set[str] = set()
        """Every upstream address routed since this agent started: in_flight() looks at these."""
        self._reload_needed = True
        """The reader's socket is new: running workers must be replaced to log to it."""
        self.workers_retired = 0
        """Old workers stopped because more than ``tuning.old_workers`` lingered (decision 0425)."""
        self._old_since: dict[int, float] = {}
        """When (monotonic) each old worker was first seen shutting down."""

    async def in_flight(self) -> dict[str, int]:
        """Established connections of nginx's processes (old workers included) per upstream;
        an upstream with none is not listed."""
        record = ProcessRecord.load(self.pid_file)
        if record is None or not record.running():
            raise RouterError(f"nginx is not running (no live master in {self.pid_file})")
        self._addresses.update(u.address for u in self.last_table().upstreams)
        pids = await asyncio.to_thread(members, self.state_dir)
        counts = await asyncio.to_thread(open_connections, pids, sorted(self._addresses))
        return {address: n for address, n in counts.items() if n > 0}

    async def stop(self) -> None:
        await super().stop()
        kill_all(self.state_dir, signal.SIGKILL)  # workers left by a master that was killed

    # -- the driver's part -----------------------------------------------------------------------

    async def _ping(self, timeout: float) -> None:
        """The master we recorded is alive and nginx's own pid file names it (nginx writes it
        once its listeners are bound)."""
        record = ProcessRecord.load(self.pid_file)
        try:
            own = int(self.master_pid_file.read_text().strip())
        except (OSError, ValueError):
            own = None
        if record is None or not record.running() or own != record.pid:
            raise RouterError(f"nginx is not running with its listeners bound on {self.listen}")

    def _check(self, table: RouteTable) -> None:
        validate_table(table)
        for index, upstream in enumerate(table.upstreams):
            host = upstream.address.rpartition(":")[0]
            parts = host.split(".")
            if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
                raise RouterError(
                    f"route table upstreams[{index}] ({upstream.instance_id}): the nginx router "
                    f"needs an IPv4 address (its drain counts connections), got "
                    f"{upstream.address!r}"
                )

    async def _load(self, table: RouteTable) -> None:
        text = build_config(table, listen=self.listen, files=self._files, tuning=self.tuning)
        try:
            unchanged = self.config_file.read_text() == text
        except OSError:
            unchanged = False
        self._addresses.update(u.address for u in table.upstreams)
        if unchanged and not self._reload_needed:
            return
        binary = find_nginx(self.settings.binary)
        process.write_atomic(self.config_file, text)
        await asyncio.to_thread(check_config, binary, self.config_file, self.prefix)
        await self._reload()

    async def _reload(self) -> None:
        """SIGHUP, then wait until the workers of the old config stopped accepting (they are
        gone or shutting down) and a new one runs: until then an old worker may still take a
        new connection and route it the old way."""
        record = ProcessRecord.load(self.pid_file)
        if record is None or not record.running():
            raise RouterError(f"nginx is not running (no live master in {self.pid_file})")
        old = await asyncio.to_thread(serving_workers, self.state_dir)
        kill(record, signal.SIGHUP)
        self._reload_needed = False
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            serving = await asyncio.to_thread(serving_workers, self.state_dir)
            if serving and not serving & old:
                await self._retire_old_workers()
                return
            await asyncio.sleep(0.02)
        raise RouterError(
            f"nginx did not replace its workers within {self.start_timeout:g} s of a reload; "
            f"see {self.log_file}: {last_error(self.log_file)}"
        )

    async def _retire_old_workers(self) -> None:
        """An old worker lives as long as one connection it holds (no worker_shutdown_timeout
        unless ``stream_grace``: decision 0460), so reloads while clients keep opening
        WebSockets would leave one more process each time, about 6 MiB apiece. Keep no more
        than ``tuning.old_workers``: stop those beyond, once old for the drain timeout, that
        hold the fewest connections; their clients reconnect to the current worker
        (decision 0425)."""
        workers = await asyncio.to_thread(old_workers, self.state_dir)
        now = time.monotonic()
        self._old_since = {pid: self._old_since.get(pid, now) for pid in workers}
        if len(workers) <= self.tuning.old_workers:
            return
        held = await asyncio.to_thread(connections_by_process, workers, sorted(self._addresses))
        keep, drain = self.tuning.old_workers, self.tuning.drain_timeout
        due = to_stop(workers, self._old_since, held, now, keep, drain)
        await asyncio.to_thread(terminate, due)
        self.workers_retired += len(due)

    async def _before_start(self) -> None:
        await self._listener.start()  # nginx's workers send to it as soon as they run
        self._reload_needed = True

    async def _adopt(self) -> None:
        self.queue.counters.connections += 1
        await super()._adopt()

    async def _adopt_without_table(self) -> None:
        """Replace the workers (same config) so they log to this agent's socket."""
        await self._reload()

    async def _spawn(self, replacing: ProcessRecord | None) -> None:
        binary = find_nginx(self.settings.binary)
        self.version = await asyncio.to_thread(nginx_version, binary)
        if replacing is not None:  # the old one stops listening first
            kill(replacing, signal.SIGQUIT)
            await process.exited(replacing, self.settings.drain_timeout + 5)
        # A master that was killed leaves its workers holding the listener: they go first.
        kill_all(self.state_dir, signal.SIGKILL)
        for _ in range(100):
            if not await asyncio.to_thread(members, self.state_dir):
                break
            await asyncio.sleep(0.05)
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "temp" / name).mkdir(parents=True, exist_ok=True)
        self.master_pid_file.unlink(missing_ok=True)
        table = self.last_table()
        self._addresses.update(u.address for u in table.upstreams)
        text = build_config(table, listen=self.listen, files=self._files, tuning=self.tuning)
        process.write_atomic(self.config_file, text)
        await asyncio.to_thread(check_config, binary, self.config_file, self.prefix)
        argv = [str(binary), "-c", str(self.config_file), "-p", str(self.prefix), "-e", "stderr"]
        pid = await asyncio.to_thread(process.spawn, argv, self.log_file, cwd=self.state_dir)
        self._reload_needed = False
        self.queue.counters.connections += 1
        await self._wait_spawned(pid)

    def _last_error(self, log: Path) -> str:
        return last_error(log)

    async def _soft_stop(self, record: ProcessRecord | None) -> None:
        """SIGQUIT: nginx stops listening and its workers finish their requests (bounded by
        ``worker_shutdown_timeout`` when ``stream_grace`` sets it), then it exits; the
        caller's SIGTERM after the drain timeout ends what is left."""
        if record is not None:
            kill(record, signal.SIGQUIT)

    async def _detach(self) -> None:
        await self._listener.close()
