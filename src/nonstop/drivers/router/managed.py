"""What every router that nonstop runs as a process of its own has in common.

:class:`ManagedRouter` is the Router port (base.py) over such a process; a driver (caddy.py,
haproxy.py) fills in only what its router does differently: how its admin interface is asked,
how a table is loaded, how the process is spawned and asked to stop. The rest is here, once:

- ``start()`` adopts the process a previous agent recorded (same pid, same start time, the
  right binary, admin interface answering: decision 0332) or spawns a new one routing the saved
  table; an adopted process that lacks what this version needs is replaced (``_can_adopt``).
- ``apply(table)`` refuses a bad table before anything is written, saves it durably
  (invariant 4: a router restarted after this routes it), loads it, and confirms through the
  listen address that the listener serves it (the table probe, admin.py).
- the request events go through one bounded, counted queue (events.py), whatever reads them.

Files in ``state_dir``: ``<program>.pid`` ({"pid", "start_time"} of the process we started),
``route-table.json`` (the last table applied), ``logs/<program>.log`` (its output), and what the
driver keeps besides (its config, its sockets).
"""

from __future__ import annotations

import asyncio
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

from nonstop.drivers.router.admin import confirm_listener
from nonstop.drivers.router.base import RequestEvent, RouteTable
from nonstop.drivers.router.events import EventQueue, StreamCounters
from nonstop.drivers.router.process import ProcessRecord, exited, kill, wait_started
from nonstop.drivers.router.settings import RouterSettings
from nonstop.drivers.router.table import load_table, save_table
from nonstop.errors import RouterError


class ManagedRouter(ABC):
    """Router port over a router process nonstop spawns and supervises."""

    program: ClassVar[str]
    """The router's binary name (``caddy``, ``haproxy``): names its files and messages, and an
    adopted process must run it."""

    admin_socket: Path
    """Where the router's admin interface answers (set by the driver)."""

    def __init__(self, state_dir: Path, settings: RouterSettings) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.settings = settings
        self.listen = settings.listen
        self.start_timeout = settings.start_timeout
        self.confirm_timeout = settings.confirm_timeout
        self.pid_file = self.state_dir / f"{self.program}.pid"
        self.table_file = self.state_dir / "route-table.json"
        self.log_file = self.state_dir / "logs" / f"{self.program}.log"
        self.version: str | None = None
        self.queue = EventQueue(settings.event_queue_size)
        self._lock = asyncio.Lock()

    # -- the Router port ---------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            await self._before_start()
            record = ProcessRecord.load(self.pid_file)
            # Adopt only the process we recorded (same pid, same start time, our binary): a
            # socket that merely answers is not a router (decision 0332).
            ours = record is not None and record.running() and record.runs(self.program)
            # One of ours that is up but still loading gets the whole start timeout.
            if ours and await self._wait_admin(self.start_timeout):
                if await self._can_adopt():
                    await self._adopt()
                else:
                    # Started by an earlier version without what this one needs: a new process
                    # takes the listener over, as on any router restart.
                    await self._spawn(replacing=record)
            else:
                if record is not None and ours:
                    kill(record, signal.SIGKILL)  # ours, alive, but its admin is dead
                    await exited(record, 5.0)
                await self._spawn(replacing=None)
            await self._after_start()

    async def apply(self, table: RouteTable) -> None:
        self._check(table)  # refuse a bad table before anything is written
        async with self._lock:
            # Durable first (invariant 4): a router restarted after this point routes ``table``.
            save_table(self.table_file, table)
            await self._load(table)
            await confirm_listener(self.program, self.listen, table, within=self.confirm_timeout)

    async def alive(self) -> bool:
        record = ProcessRecord.load(self.pid_file)
        if record is not None and not record.running():
            return False
        return await self._wait_admin(0.0)

    async def stop(self) -> None:
        """Ask the router to stop softly (it stops listening, finishes open requests within the
        drain timeout), then SIGTERM, then SIGKILL, each only if the process is still there."""
        async with self._lock:
            record = ProcessRecord.load(self.pid_file)
            await self._soft_stop(record)
            if record is not None:
                for sig, wait in (
                    (None, self.settings.drain_timeout + 5),
                    (signal.SIGTERM, 5.0),
                    (signal.SIGKILL, 5.0),
                ):
                    if sig is not None:
                        kill(record, sig)
                    if await exited(record, wait):
                        break
            self.pid_file.unlink(missing_ok=True)
            await self._detach()

    async def close(self) -> None:
        """Let go of the router without stopping it (the agent exits; traffic keeps flowing)."""
        async with self._lock:
            await self._detach()

    async def events(self) -> AsyncIterator[RequestEvent]:
        """One consumer at a time (two would split the events). The stream outlives router
        restarts: the reader is the agent's, the router reconnects to it or it to the router."""
        async for event in self.queue.events():
            yield event

    @abstractmethod
    async def in_flight(self) -> dict[str, int]:
        """Open requests and streams per upstream address."""

    # -- extras the agent shows ----------------------------------------------------------------

    @property
    def stream(self) -> StreamCounters:
        """Request-event counters: received, dropped (slow consumer), malformed, connections."""
        return self.queue.counters

    @property
    def pid(self) -> int | None:
        record = ProcessRecord.load(self.pid_file)
        return record.pid if record is not None and record.running() else None

    def last_table(self) -> RouteTable:
        """The table last applied (empty before the first apply)."""
        return load_table(self.table_file)

    # -- what a driver provides ----------------------------------------------------------------

    @abstractmethod
    async def _ping(self, timeout: float) -> None:
        """One cheap admin call; RouterError when the admin interface does not answer."""

    @abstractmethod
    def _check(self, table: RouteTable) -> None:
        """RouterError naming the first thing in ``table`` this router cannot route."""

    @abstractmethod
    async def _load(self, table: RouteTable) -> None:
        """Make the running router route ``table`` (in-flight requests finish where they are)."""

    @abstractmethod
    async def _spawn(self, replacing: ProcessRecord | None) -> None:
        """Start a router process routing the saved table and :meth:`_wait_spawned` for it;
        ``replacing``: a running one of ours it takes the listener over from."""

    @abstractmethod
    def _last_error(self, log: Path) -> str:
        """The cause the router logged for its last failure."""

    @abstractmethod
    async def _soft_stop(self, record: ProcessRecord | None) -> None:
        """Ask the router to stop listening and exit once its open requests are done."""

    @abstractmethod
    async def _detach(self) -> None:
        """Close what the agent holds (event reader, admin connections); the router runs on."""

    async def _before_start(self) -> None:
        """Runs first in ``start()`` (a reader the router dials must be up before it starts)."""
        return None

    async def _after_start(self) -> None:
        """Runs last in ``start()``, with the router adopted or spawned."""
        return None

    async def _can_adopt(self) -> bool:
        """Whether the running router has all this version needs (else it is replaced)."""
        return True

    async def _adopt_without_table(self) -> None:
        """Adopting when no table was ever saved: change nothing that routes."""
        return None

    # -- shared internals ------------------------------------------------------------------------

    async def _adopt(self) -> None:
        """Load the saved table again (changing nothing when the router already routes it), so
        settings follow the new agent's and the listener is confirmed to serve it; without the
        table file nothing that routes is touched: adopting must never empty a live table."""
        if self.table_file.exists():
            table = self.last_table()
            await self._load(table)
            await confirm_listener(self.program, self.listen, table, within=self.confirm_timeout)
        else:
            await self._adopt_without_table()

    async def _wait_spawned(self, pid: int) -> None:
        await wait_started(
            self.program,
            pid,
            self.pid_file,
            lambda: self._wait_admin(0.0),
            listen=self.listen,
            admin_socket=self.admin_socket,
            log=self.log_file,
            log_error=self._last_error,
            timeout=self.start_timeout,
        )

    async def _wait_admin(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self._ping(2.0)
                return True
            except RouterError:
                pass
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
