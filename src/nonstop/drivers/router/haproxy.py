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
    slots.json            the release slots last applied (``release_slots``): letter ->
                          {"release", "addresses"}; a restarted HAProxy routes them
    slots.map             ``release a|b``, written from slots.json at start, then changed
                          through the runtime API (``add map``, ``del map``)
    release.map           ``live <release>`` (``release_stamp``, the edge): the stamp; written
                          first on every change, so a restarted HAProxy stamps the same
    logs/haproxy.log      HAProxy's own output

    * in a short private directory instead when ``state_dir`` is too deep for a unix socket path
      (see ``haproxy_process.socket_dir``).

``apply(table)`` reads the backend (``show servers state``), then adds and enables new servers,
reweights kept ones, and only then puts leaving ones into maintenance, and does the same in the
panic backend (the same servers, unchecked: decision 0570): their open requests and
streams finish there, ``in_flight()`` counts them, and they are deleted once idle.
``apply_slots(slots)`` does the same for the two slot backends (decision 0581), around the
slot map's changes: a release's entry leaves before its servers, a new one comes after them.
A change never closes a connection: established tunnels (websockets) of every server, leaving ones
included, run on until the client or the instance ends them (the engine stops a drained
instance at its drain deadline); only with ``stream_grace`` set are a leaving server's sessions
shut down that long after it left (decision 0460). HAProxy runs in its own session and outlives
the agent; a new agent's ``start()`` adopts it (same pid and start time, admin socket answers)
and applies the saved table through the runtime API again: no restart, no reload.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from nonstop.config.validate import release_name_problem
from nonstop.drivers.router.admin import AdminUnavailable, table_hash, with_retries
from nonstop.drivers.router.base import RouteTable
from nonstop.drivers.router.haproxy_config import (
    BACKEND,
    BACKENDS,
    DRAINING,
    FRONT_KEY,
    LIVE_KEY,
    PANIC_BACKEND,
    PROBE_KEY,
    SERVING,
    SLOT_LETTERS,
    Files,
    HAProxyTuning,
    ServerState,
    Slot,
    assign_slots,
    build_config,
    desired_servers,
    map_values,
    parse_map,
    parse_servers_state,
    parse_sessions,
    plan_changes,
    plan_release,
    plan_slot_map,
    probe_map_text,
    release_map_text,
    server_options,
    slot_backend,
    slot_map_text,
    slot_servers,
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
        self.slots_file = self.state_dir / "slots.json"
        self.slots_map = self.state_dir / "slots.map"
        self.release_map = self.state_dir / "release.map"
        self._listener = RingReader(self.admin_socket, self.queue)
        self._leaving: dict[tuple[str, str], float] = {}
        """(backend, server) out of that backend's table but maybe still serving -> monotonic
        time after which their sessions are shut down (infinity without ``stream_grace``)."""

    async def in_flight(self) -> dict[str, int]:
        """Current sessions (+ queued requests) per upstream address from ``show stat``, summed
        over every backend (table, panic twins, slots): an instance serving a request through
        its slot is not idle. A server taken out of a backend stays listed with its count until
        it is idle; then it is deleted and disappears (read it as 0)."""
        async with self._lock:
            by_backend = await self._reap()
        total: dict[str, int] = {}
        kept: set[str] = set()
        for backend, sessions in by_backend.items():
            for name, count in sessions.items():
                total[name] = total.get(name, 0) + count
                if (backend, name) not in self._leaving:
                    kept.add(name)
        return {name: n for name, n in total.items() if n > 0 or name in kept}

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
        fail on every apply; ``show map`` lists the file of every map it loaded), the panic
        backend or the slot backends (``show backend`` lists them). One started with other
        ``release_slots`` / ``release_stamp`` settings has (or lacks) the slot or stamp rules,
        which only a restart changes: it loaded ``slots.map`` / ``release.map`` iff it has."""
        maps = await self.command("show map")
        if str(self.probe_map) not in maps:
            return False
        if (str(self.slots_map) in maps) != self.settings.release_slots:
            return False
        if (str(self.release_map) in maps) != self.settings.release_stamp:
            return False
        declared = (await self.command("show backend")).split()
        # Without release_slots the slot backends stay empty and unused: a HAProxy started
        # before they existed is adopted, not replaced (no takeover for a plain upgrade).
        needed = BACKENDS if self.settings.release_slots else (BACKEND, PANIC_BACKEND)
        return all(backend in declared for backend in needed)

    async def _adopt(self) -> None:
        """The saved table (ManagedRouter), then the saved slots and stamp, again through the
        runtime API: changes nothing when the adopted HAProxy already routes them."""
        self._leaving.clear()
        await super()._adopt()
        if self.settings.release_slots:
            await self._sync_slots(self.saved_slots())
        if self.settings.release_stamp:
            await self._sync_release(self.stamped_release())

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
        slots = self.saved_slots() if self.settings.release_slots else {}
        if self.settings.release_slots:
            write_atomic(self.slots_map, slot_map_text(slots))
        if self.settings.release_stamp:
            write_atomic(self.release_map, release_map_text(self.stamped_release()))
        files = Files(
            self.admin_socket,
            self.body_file,
            self.probe_map,
            slots_map=self.slots_map if self.settings.release_slots else None,
            release_map=self.release_map if self.settings.release_stamp else None,
        )
        servers = desired_servers(table)
        front = self.settings.front_health
        text = build_config(
            servers,
            listen=self.listen,
            files=files,
            tuning=self.tuning,
            front_health=front,
            slots=slots,
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

    # -- release slots (a fleet host's router) and the stamp (the fleet's edge): decision 0581 --

    async def apply_slots(self, slots: Mapping[str, Sequence[str]]) -> None:
        """Route exactly ``slots`` from now on: releases in priority order -> the addresses of
        their ready instances; the first two with an address get a slot (``assign_slots``: a
        release that stays keeps its slot). Saved first (a HAProxy restarted after this routes
        them), then applied through the runtime API: a release that left loses its map entry
        (its stamped requests go to the table), the slots' servers change in the safe order of
        ``plan_changes`` (leaving ones drain and are deleted once idle), then a new release's
        entry is added. Applying the same slots again changes nothing."""
        if not self.settings.release_slots:
            raise RouterError("router.release_slots is off: this router has no release slots")
        async with self._lock:
            previous = {slot.release: letter for letter, slot in self.saved_slots().items()}
            assigned = assign_slots(slots, previous)  # RouterError before anything is written
            _save(self.slots_file, json.dumps(_slots_to_dict(assigned), indent=2), "release slots")
            await self._sync_slots(assigned)

    def saved_slots(self) -> dict[str, Slot]:
        """The slots last applied (letter -> Slot); none before the first ``apply_slots``."""
        try:
            data = json.loads(self.slots_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RouterError(f"{self.slots_file} is unreadable: {exc}") from exc
        try:
            return {
                letter: Slot(str(entry["release"]), tuple(str(a) for a in entry["addresses"]))
                for letter, entry in data.items()
                if letter in SLOT_LETTERS
            }
        except (AttributeError, KeyError, TypeError) as exc:
            raise RouterError(f"{self.slots_file}: not release slots ({exc!r})") from exc

    async def _sync_slots(self, assigned: Mapping[str, Slot]) -> None:
        current = parse_map(await self.command(f"show map {self.slots_map}"))
        before, after = plan_slot_map(assigned, current, self.slots_map)
        await self._run(before)
        for letter in SLOT_LETTERS:
            backend = slot_backend(letter)
            desired = slot_servers(assigned.get(letter))
            now = parse_servers_state(await self.command(f"show servers state {backend}"))
            plan = plan_changes(desired, now, server_options(self.tuning), backend=backend)
            await self._run(plan.commands)
            self._track_leaving(backend, desired, now)
        await self._run(after)
        await self._reap()

    def stamped_release(self) -> str | None:
        """The release the edge stamps (``release.map``), None when it stamps none."""
        try:
            text = self.release_map.read_text()
        except FileNotFoundError:
            return None
        return map_values(text).get(LIVE_KEY)

    async def set_release(self, release: str | None) -> None:
        """Stamp ``release`` on every request from now on (None: no stamp): one runtime-API
        command, so every request evaluated after it carries the new value and none a mix.
        Saved first, so a HAProxy restarted after this stamps the same. Idempotent."""
        if not self.settings.release_stamp:
            raise RouterError("router.release_stamp is off: this router stamps no release")
        problem = None if release is None else release_name_problem(release)
        if problem is not None:
            raise RouterError(f"release stamp: {problem}")
        async with self._lock:
            _save(self.release_map, release_map_text(release), "release stamp")
            await self._sync_release(release)

    async def _sync_release(self, release: str | None) -> None:
        current = parse_map(await self.command(f"show map {self.release_map}")).get(LIVE_KEY)
        await self._run(plan_release(self.release_map, current, release))

    async def _run(self, commands: Sequence[str]) -> None:
        for line in commands:
            reply = await self.command(line)
            if reply not in OK_REPLIES:
                raise RouterError(f"haproxy refused {line!r}: {reply}")

    def _track_leaving(
        self, backend: str, desired: Mapping[str, object], current: Sequence[ServerState]
    ) -> None:
        """Servers of ``backend`` not desired (leaving now, or left under a previous agent) are
        reaped once idle; desired ones are not (any more)."""
        grace = self.tuning.stream_grace
        deadline = math.inf if grace is None else time.monotonic() + grace
        for server in current:
            if server.name not in desired:
                self._leaving.setdefault((backend, server.name), deadline)
        for name in desired:
            self._leaving.pop((backend, name), None)

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
        await self._run(
            [
                *plan.commands,
                *panic.commands,
                f"set map {self.probe_map} {PROBE_KEY} {table_hash(table)}",
            ]
        )
        self._track_leaving(BACKEND, desired, current)
        self._track_leaving(PANIC_BACKEND, desired, twins)
        await self._reap()

    async def _reap(self) -> dict[str, dict[str, int]]:
        """Delete leaving servers that are idle, or past their ``stream_grace`` (their sessions
        are shut down first), from every backend (table, panic twins, slots): a server leaves
        each backend on its own, so an address out of the table but in a slot stays there.
        Returns the sessions per server of each backend, as read before deleting, without the
        servers deleted."""
        text = await self.command("show stat")
        by_backend = {backend: parse_sessions(text, backend) for backend in BACKENDS}
        for (backend, name), deadline in list(self._leaving.items()):
            sessions = by_backend[backend]
            if name in sessions and not await self._delete(backend, name, sessions[name], deadline):
                continue
            sessions.pop(name, None)
            del self._leaving[(backend, name)]
        return by_backend

    async def _delete(self, backend: str, name: str, sessions: int, deadline: float) -> bool:
        """Delete a leaving server of ``backend`` once idle or past ``deadline``; True if gone."""
        if sessions > 0:
            if time.monotonic() < deadline:
                return False
            await self.command(f"shutdown sessions server {backend}/{name}")
        reply = await self.command(f"del server {backend}/{name}")
        # Refused while it still holds an idle server connection: tried again next time.
        return reply in OK_REPLIES or reply == "No such server."


def _save(path: Path, text: str, what: str) -> None:
    """Durably, before HAProxy is told (a full disk: RouterError, HAProxy left as it was)."""
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise RouterError(f"could not save the {what} to {path}: {exc}") from exc


def _slots_to_dict(assigned: Mapping[str, Slot]) -> dict[str, dict[str, object]]:
    return {
        letter: {"release": slot.release, "addresses": list(slot.addresses)}
        for letter, slot in assigned.items()
    }
