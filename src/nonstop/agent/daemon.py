"""The long-running agent: supervises instances and the router, runs rollouts, serves the API.

The agent is disposable by design: instances and the router run in their own sessions and
outlive it, and everything it knows is in the store. ``kill -9`` and ``nonstop up`` again only
costs the time to re-adopt; no request is dropped (invariant 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import ipaddress
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from nonstop import __version__
from nonstop.agent.api import (
    MAX_BODY,
    MAX_ID,
    auth_middleware,
    int_param,
    int_value,
    json_response,
    read_json,
    tail_file,
)
from nonstop.agent.dashboard import Dashboard, TokenRoute, api_routes, start_dashboard
from nonstop.agent.metrics import metrics_route, metrics_token
from nonstop.agent.paths import Paths
from nonstop.analysis.checks import AnalysisRun, conclude
from nonstop.analysis.explain import ExplainRow, explain, explain_history
from nonstop.analysis.sequential import SequentialRun
from nonstop.analysis.verdict import Verdict
from nonstop.config.load import validate_config
from nonstop.config.schema import NonstopConfig
from nonstop.drivers.metrics import RequestStats
from nonstop.drivers.router.base import Router
from nonstop.engine.engine import DeployRequest, Engine, MeasurementSource
from nonstop.engine.health import describe
from nonstop.engine.instances import InstanceManager
from nonstop.engine.releases import check_request
from nonstop.errors import ConfigError, NonstopError, StateError, UsageError
from nonstop.flags.service import FlagService
from nonstop.store import RolloutRow, open_store

if TYPE_CHECKING:
    from nonstop.drivers.metrics.prometheus_provider import PrometheusSource
    from nonstop.notify.deliver import Notifier


T = TypeVar("T")


class AgentLock:
    """One agent per project: an exclusive flock on .nonstop/agent.lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"an agent is already running for {self.path.parent.parent} "
                "(`nonstop status` shows it; `nonstop down` stops it)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def make_router(paths: Paths, config: NonstopConfig) -> Router:
    from nonstop.drivers.router import registry
    from nonstop.drivers.router.settings import RouterSettings

    settings = RouterSettings(
        listen=config.router.listen,
        drain_timeout=config.app.drain_timeout,
        upstream_timeout=config.router.upstream_timeout,
        health_path=config.health.path,
        stream_grace=config.router.stream_grace,
        stream_idle_timeout=config.router.stream_idle_timeout,
        front_health=config.router.front_health,
        release_slots=config.router.release_slots,
    )
    return registry.make_router(config.router.kind, paths.state / "router", settings)


ROUTER_SETTINGS = (
    ("router", "listen"),
    ("router", "kind"),
    ("router", "upstream_timeout"),
    ("router", "stream_grace"),
    ("router", "stream_idle_timeout"),
    ("router", "front_health"),
    ("router", "release_slots"),
)
"""What the running router was started with: a deploy that changes one is refused. The
router's own health checks use the agent's ``health.path`` too (checked below)."""


ROUTER_WAIT = float(os.environ.get("NONSTOP_ROUTER_WAIT", "20"))
"""Seconds start-up waits for the router (retrying, then restarting it) before the agent runs
on without it, degraded, and keeps trying in the background (``NONSTOP_ROUTER_WAIT``)."""
WATCH_ROUTER = 1.0
"""Seconds between two router checks while it answers (backoff up to 10 s while it fails)."""
ROUTER_RECHECK = 0.5
"""Seconds before a router that missed one check is checked again (and restarted if it misses)."""


class AdoptOnce(InstanceManager):
    """Adopting the previous agent's instances happens once, so a recovery that failed after
    it (the router's admin API, say) can be run again without adopting anything twice."""

    adopted = False

    async def adopt(self) -> None:
        if not self.adopted:
            await super().adopt()
            self.adopted = True


class Agent:
    def __init__(self, paths: Paths, config: NonstopConfig) -> None:
        self.paths = paths
        self.config = config
        self.stop_event = asyncio.Event()
        self.stop_instances = False
        self.started_at = time.time()
        self._size: tuple[float, int] | None = None
        self.contract_running = False
        self._recovery_began = False
        self.notifier: Notifier | None = None
        self.metrics_token: str | None = None
        """``[metrics] token``: every /metrics scrape must carry it when set."""
        self.dashboard: Dashboard | None = None
        self.recovered = asyncio.Event()
        """Set once start-up recovery has finished or given up: the API answers from then on
        (it binds before, so a bad socket or port fails the start before anything spawns)."""

    async def run(self) -> None:
        self.paths.ensure()
        lock = AgentLock(self.paths.lock)
        lock.acquire()
        try:
            await self._serve()
        finally:
            lock.release()

    async def _serve(self) -> None:
        from nonstop.drivers.runtime.registry import RuntimeContext, make_runtime

        token = self.paths.read_or_create_token()
        self.paths.ensure_socket_dir()
        listen = tcp_listen(self.config.agent.listen)  # bad [agent] listen: refuse before starting
        self.metrics_token = metrics_token(self.config)  # and an unset $VAR the same way
        self.notifier = notifier(self.config)
        store = open_store(self.paths.state)
        router = make_router(self.paths, self.config)
        stats = RequestStats()
        runtime = make_runtime(
            self.config.runtime.kind, RuntimeContext(self.paths.state, self.paths.logs)
        )

        def instances(engine: Engine) -> InstanceManager:
            return AdoptOnce(
                store,
                runtime,
                self.paths.logs,
                self.paths.state,
                engine.config_of,
                engine.wake,
                engine.emit,
            )

        measurements, poller = self._measurement_source(stats)
        engine = Engine(store, instances, router, measurements, self.paths.state, stream=stats)
        engine.revive_router_in_tick = False  # the router has its own task (invariant 8)
        engine.release_slots = self.config.router.release_slots
        self.engine = engine
        self.stats = stats
        self.flags = FlagService(
            self.paths.state, self.config.flags, self._flag_error_rate, engine.emit
        )
        connect_notifications(self.notifier, engine, self.flags)
        engine.emit("info", f"agent {os.getpid()} starting (nonstop {__version__})")
        runner: web.AppRunner | None = None
        tasks: list[asyncio.Task[None]] = []
        started = False
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # from here on a stop request cleans up
            loop.add_signal_handler(sig, self.stop_event.set)
        try:
            # The API binds first, so a path or port problem stops us before anything spawns.
            runner = await self._start_api(token, listen)
            self.dashboard = await start_dashboard(
                self, self.config.dashboard, self._dashboard_token_routes()
            )
            self._recovery_began = True
            try:
                recovered = await self._recover(engine)
            finally:
                self.recovered.set()
            self.paths.pidfile.write_text(str(os.getpid()))
            await self.flags.start()
            if recovered:
                await engine.instances.stop_strays()
            tasks = [
                asyncio.create_task(engine.run(self.stop_event)),
                asyncio.create_task(self._watch_router(engine)),
                asyncio.create_task(self._consume_requests(router, stats)),
            ]
            if poller is not None:
                poller.on_error = lambda message: engine.emit("warning", f"metrics: {message}")
                tasks.append(asyncio.create_task(poller.run(self.stop_event)))
            if self.stop_event.is_set():  # stopped while starting: stop what this start began
                return
            engine.emit("info", f"agent {os.getpid()} started (nonstop {__version__})")
            started = True
            await self.stop_event.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._shut(engine, router, stop_all=self.stop_instances, started=started)
            with contextlib.suppress(Exception):
                await self.flags.close()
            with contextlib.suppress(Exception):
                await self.notifier.close()
            if self.dashboard is not None:
                with contextlib.suppress(Exception):
                    await self.dashboard.close()
            if runner is not None:
                await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                self.paths.pidfile.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.paths.socket.unlink()
            engine.flush_events()
            store.close()

    async def _shut(self, engine: Engine, router: Router, *, stop_all: bool, started: bool) -> None:
        if started and stop_all:
            await engine.instances.stop_all()
            await router.stop()
            engine.emit("info", "agent stopped with every instance and the router")
        elif not started and self._recovery_began and not engine.store.instances():
            # A start that failed: nothing serves, so the router it started must not keep
            # the port (instances of an earlier agent are left alone, and so is their router).
            await engine.instances.close()
            await router.stop()
            engine.emit("info", "agent start failed; stopped the router it started")
        else:
            await engine.instances.close()
            await router.close()
            engine.emit("info", "agent stopped; instances and router keep serving")

    async def _recover(self, engine: Engine) -> bool:
        """Adopt what the previous agent left and resume its rollout. A router that does not
        answer is retried, then restarted, for ROUTER_WAIT seconds; after that (or on any
        other failure) the agent runs on degraded, saying why, instead of exiting. True when
        recovery completed."""
        deadline = time.monotonic() + ROUTER_WAIT
        attempt = 0
        while True:
            attempt += 1
            try:
                await engine.recover()
            except Exception as exc:
                why = describe(exc)
                if time.monotonic() >= deadline or self.stop_event.is_set():
                    engine.health.fail("recovery", f"start-up recovery failed: {why}")
                    engine.emit("error", f"start-up recovery failed, running degraded: {why}")
                    with contextlib.suppress(OSError):
                        print(
                            f"error: start-up recovery failed: {why}", file=sys.stderr, flush=True
                        )
                    return False
                engine.emit("warning", f"start-up recovery attempt {attempt} failed: {why}")
                if attempt % 3 == 0 and not await engine.router.alive():
                    engine.emit("warning", "the router stays unreachable: restarting it")
                    with contextlib.suppress(Exception):
                        await engine.router.stop()
                await asyncio.sleep(min(0.25 * 2**attempt, 4.0))
                continue
            if engine.health.ok("recovery") is not None:
                engine.emit("info", "start-up recovery completed")
            return True

    async def _watch_router(self, engine: Engine) -> None:
        """Router revival on its own clock: never waits on a rollout tick, never ends on an
        exception (a failure is an event once, and a degraded status, with backoff)."""
        recovered = not engine.health.problems.get("recovery")
        while not self.stop_event.is_set():
            try:
                if not recovered:
                    await engine.recover()  # adopts once; safe to run again
                    recovered = True
                    engine.health.ok("recovery")
                    engine.emit("info", "start-up recovery completed")
                    await engine.instances.stop_strays()
                self._tune_router(engine)
                if not await engine.router.alive():
                    # Only a router that misses two checks is restarted: one slow admin answer
                    # (during a reload the tick asked for) must not cost a restart.
                    await asyncio.sleep(ROUTER_RECHECK)
                    await engine.revive_router()
            except Exception as exc:
                if engine.health.fail("router", f"the router cannot be revived: {describe(exc)}"):
                    engine.emit("error", f"router revival failed: {describe(exc)}")
            else:
                if engine.health.ok("router") is not None:
                    engine.emit("info", "the router answers again")
            delay = engine.health.backoff("router", WATCH_ROUTER, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)

    def _tune_router(self, engine: Engine) -> None:
        """The router drains with the longest ``drain_timeout`` of the releases it may still
        route (each release's own config), not with the one the agent started with."""
        tuning = getattr(engine.router, "tuning", None)
        if tuning is None or not hasattr(tuning, "drain_timeout"):
            return
        names = set(engine.desired) | engine.instances.releases()
        if engine.active is not None:
            names.add(engine.active.spec.candidate)
        timeouts = []
        for name in names:
            with contextlib.suppress(NonstopError):
                timeouts.append(engine.config_of(name).app.drain_timeout)
        if timeouts and max(timeouts) != tuning.drain_timeout:
            engine.router.tuning = dataclasses.replace(tuning, drain_timeout=max(timeouts))  # type: ignore[attr-defined]

    def _measurement_source(
        self, stats: RequestStats
    ) -> tuple[MeasurementSource, PrometheusSource | None]:
        """``[metrics] provider``: the router's request stream, or Prometheus through a poller
        (returned second, for the caller to run)."""
        metrics = self.config.metrics
        if metrics.provider != "prometheus":
            return stats, None
        from nonstop.drivers.metrics.prometheus_provider import (
            PrometheusProvider,
            PrometheusSource,
        )

        provider = PrometheusProvider(
            str(metrics.prometheus_url), metrics.error_rate_query, metrics.latency_query
        )
        source = PrometheusSource(provider)
        return source, source

    async def _consume_requests(self, router: Router, stats: RequestStats) -> None:
        while not self.stop_event.is_set():
            try:
                async for event in router.events():
                    stats.record(event)
            except Exception as exc:  # the stream must come back after a router restart
                self.engine.emit("warning", f"request stream interrupted: {describe(exc)}")
            await asyncio.sleep(1.0)

    def _flag_error_rate(self, since: float) -> tuple[int, int]:
        """(errors, requests) of the active release since ``since``, for guarded flag rollouts."""
        release = self.engine.store.desired_state().active_release
        if not release:
            return 0, 0
        measurement = self.stats.snapshot(str(release), since, time.time())
        return measurement.errors, measurement.requests

    def _dashboard_token_routes(self) -> list[TokenRoute]:
        """``/metrics`` on the dashboard's listener, behind ``[metrics] token`` (none without one:
        that listener may face a network, the agent's own sockets are local)."""
        if not self.metrics_token:
            return []
        return [TokenRoute(metrics_route(self, None), self.metrics_token)]

    async def _start_api(self, token: str, listen: tuple[str, int] | None) -> web.AppRunner:
        app = web.Application(
            middlewares=[
                auth_middleware(token, frozenset({"/metrics"})),
                self._after_recovery,
            ],
            client_max_size=MAX_BODY,
        )
        app.add_routes(
            [
                web.get("/v1/status", self.h_status),
                web.post("/v1/deploy", self.h_deploy),
                web.get("/v1/rollouts", self.h_rollouts),
                web.get("/v1/rollouts/{id}", self.h_rollout),
                web.get("/v1/events", self.h_events),
                web.get("/v1/analysis", self.h_analysis),
                web.post("/v1/command", self.h_command),
                web.post("/v1/rollback", self.h_rollback),
                web.post("/v1/front", self.h_front),
                web.get("/v1/logs", self.h_logs),
                web.post("/v1/shutdown", self.h_shutdown),
                web.post("/v1/migrate/contract", self.h_contract),
                metrics_route(self, self.metrics_token),
                *self.flags.admin_routes(),
                *api_routes(lambda: self.dashboard),
            ]
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            with contextlib.suppress(FileNotFoundError):
                self.paths.socket.unlink()
            old_umask = os.umask(0o177)
            try:
                await web.UnixSite(runner, str(self.paths.socket)).start()
            finally:
                os.umask(old_umask)
            os.chmod(self.paths.socket, 0o600)
            if listen is not None:
                await web.TCPSite(runner, listen[0], listen[1]).start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.paths.socket}" + (f" or {listen[0]}:{listen[1]}" if listen else "")
            raise StateError(f"the agent API cannot listen on {where}: {describe(exc)}") from exc
        return runner

    @web.middleware
    async def _after_recovery(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Requests wait for start-up recovery: nothing is deployed or reported half-adopted."""
        if not self.recovered.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.recovered.wait(), ROUTER_WAIT + 5)
        return await handler(request)

    # -- handlers ----------------------------------------------------------------------------

    async def h_status(self, request: web.Request) -> web.Response:
        return json_response(await self.status_data())

    async def status_data(self) -> dict[str, Any]:
        """What `nonstop status` shows (the dashboard's overview too)."""
        status = self.engine.status()
        row = self.engine.active.row if self.engine.active else None
        if status["rollout"] is not None and row is not None:
            status["rollout"]["standing"] = rollout_standing(self.engine, row)[0]
        router_alive = await self.engine.router.alive()
        status["agent"] = {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "project": str(self.paths.project),
        }
        status["router"] = {
            "kind": self.config.router.kind,
            "listen": self.config.router.listen,
            "alive": router_alive,
            "pid": getattr(self.engine.router, "pid", None),
            "release_slots": self.config.router.release_slots,
        }
        status["front"] = self._front()
        status["app"] = self.config.app.name
        status["degraded"] = self.engine.health.to_dict()
        status["contract_running"] = self.contract_running
        status["state_dir"] = {"path": str(self.paths.state), "bytes": await self._state_size()}
        status["dashboard"] = self.dashboard.base_url if self.dashboard else None
        return status

    async def _state_size(self) -> int:
        """The state dir's size, walked off the event loop at most every 10 s (a big
        .nonstop/ takes a while to walk, and `deploy` follows its rollout through status)."""
        now = time.monotonic()
        if self._size is None or now - self._size[0] > 10.0:
            from nonstop.engine.retention import state_dir_size

            self._size = (now, await asyncio.to_thread(state_dir_size, self.paths.state))
        return self._size[1]

    async def h_deploy(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        release = body.get("release")
        path = body.get("path")
        if not isinstance(release, str) or not release:
            raise UsageError('deploy: "release" (a name) is required')
        if not isinstance(path, str) or not os.path.isabs(path):
            raise UsageError('deploy: "path" must be an absolute directory')
        env = body.get("env") or {}
        config = body.get("config")
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise UsageError('deploy: "env" must map names to strings')
        if not isinstance(config, dict):
            raise UsageError('deploy: "config" (the nonstop.toml contents) is required')
        strategy = body.get("strategy")
        if strategy is not None and not isinstance(strategy, str):
            raise UsageError('deploy: "strategy" must be a string')
        check_request(release, env)  # the name and env first, as the CLI checks them
        self._check_router_settings(config)
        if self.contract_running:
            raise StateError("a contract migration is running; deploy again once it has finished")
        row = await self.engine.deploy(
            DeployRequest(release, Path(path), dict(env), config, strategy)
        )
        return json_response(row.to_dict(), 202)

    def _check_router_settings(self, wire: dict[str, Any]) -> None:
        """The router keeps the settings it started with; a deploy whose config changes them
        is refused (exit 2) rather than silently ignored."""
        try:
            config = validate_config(wire)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        for section, key in (*ROUTER_SETTINGS, ("health", "path")):
            running = getattr(getattr(self.config, section), key)
            wanted = getattr(getattr(config, section), key)
            if running != wanted:
                raise UsageError(
                    f"{section}.{key} changed from {running} to {wanted}: the running router "
                    f"keeps {running} (a deploy cannot change it without dropping requests); "
                    "run `nonstop down && nonstop up` to apply it, or deploy with the old value"
                )

    async def h_rollouts(self, request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 50, low=1, high=10_000)
        return json_response([r.to_dict() for r in self.engine.store.rollouts(limit)])

    async def h_rollout(self, request: web.Request) -> web.Response:
        rollout_id = int_value(request.match_info["id"], "rollout id", low=0, high=MAX_ID)
        row = self.engine.store.rollout(rollout_id)
        if row is None:
            return json_response({"error": f"no rollout {rollout_id}"}, 404)
        data = row.to_dict()
        data["journal"] = self.engine.store.journal(rollout_id)
        data["events"] = self.engine.store.events(rollout_id=rollout_id)
        return json_response(data)

    async def h_events(self, request: web.Request) -> web.Response:
        after = int_param(request, "after", 0, low=0, high=MAX_ID)
        rollout = request.query.get("rollout")
        events = self.engine.store.events(
            after=after,
            rollout_id=int_value(rollout, "rollout") if rollout else None,
            limit=int_param(request, "limit", 500, low=1, high=10_000),
        )
        return json_response(events)

    async def h_analysis(self, request: web.Request) -> web.Response:
        """What each check of a rollout saw and decided: ``?rollout=ID``, else the running
        rollout, else the last one."""
        store = self.engine.store
        rollout = request.query.get("rollout")
        if rollout:
            row = store.rollout(int_value(rollout, "rollout"))
            if row is None:
                return json_response({"error": f"no rollout {rollout}"}, 404)
        else:
            row = store.running_rollout() or next(iter(store.rollouts(1)), None)
            if row is None:
                return json_response({"error": "no rollout yet: nothing to explain"}, 404)
        return json_response(analysis_report(row, *rollout_standing(self.engine, row)))

    async def h_command(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        command = body.get("command")
        if not isinstance(command, str):
            raise UsageError('command: "command" is required')
        return json_response(self.engine.command(command).to_dict())

    def _front(self) -> str | None:
        """What the router's front health path says (None: it answers none)."""
        front_state = getattr(self.engine.router, "front_state", None)
        if self.config.router.front_health is None or front_state is None:
            return None
        return str(front_state())

    async def h_front(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        serving = body.get("serving")
        if not isinstance(serving, bool):
            raise UsageError('front: "serving" (true or false) is required')
        set_front = getattr(self.engine.router, "set_front", None)
        if self.config.router.front_health is None or set_front is None:
            raise UsageError(
                "front: this host's router answers no front health path (router.front_health, "
                'with router.kind = "haproxy")'
            )
        changed = await set_front(serving)
        return json_response({"front": self._front(), "changed": changed})

    async def h_rollback(self, request: web.Request) -> web.Response:
        row = await self.engine.rollback()
        return json_response(row.to_dict(), 202)

    async def h_logs(self, request: web.Request) -> web.Response:
        lines = int_param(request, "lines", 50, low=1, high=10_000)
        instance = request.query.get("instance")
        release = request.query.get("release")
        if instance:
            if "/" in instance or instance.startswith("."):
                raise UsageError(f"no instance {instance!r}")
            ids = [instance]
        else:
            rows = self.engine.store.instances(include_stopped=release is not None)
            ids = [r.id for r in rows if release in (None, r.release)][-8:]
        logs = {i: tail_file(self.paths.logs / f"{i}.log", lines) for i in ids}
        return json_response(logs)

    async def h_shutdown(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        stop = body.get("stop_instances", False)
        if not isinstance(stop, bool):
            raise UsageError('shutdown: "stop_instances" must be true or false')
        self.stop_instances = stop
        asyncio.get_running_loop().call_later(0.05, self.stop_event.set)
        return json_response({"stopping": True, "stop_instances": self.stop_instances})

    async def h_contract(self, request: web.Request) -> web.Response:
        """Contract migrations, gate and run together (decision 0350): the engine's lock is held
        and deploys are refused from the gate to the last statement, so no release can start
        in between."""
        from nonstop.migrate import runner

        body = await read_json(request)
        if "tool" in body:
            return await self._framework_contract(body)
        directory, url = body.get("directory"), body.get("url")
        if not isinstance(directory, str) or not os.path.isabs(directory):
            raise UsageError('contract: "directory" must be an absolute path')
        if not isinstance(url, str) or not url:
            raise UsageError('contract: "url" is required')
        numbers = {}
        for key, default in (("lock_timeout", 2.0), ("pg_version", 15)):
            value = body.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise UsageError(f'contract: "{key}" must be a positive number')
            numbers[key] = value
        target = runner.Target(
            directory=Path(directory),
            url=url,
            lock_timeout=float(numbers["lock_timeout"]),
            pg_version=int(numbers["pg_version"]),
        )
        summary = await self._under_deploy_lock(
            lambda: runner.run_contract(target, state_dir=self.paths.state)
        )
        applied = ", ".join(a.name for a in summary.applied) or "none pending"
        self.engine.emit("info", f"contract migrations applied: {applied}")
        return json_response(summary.to_dict())

    async def _framework_contract(self, body: dict[str, Any]) -> web.Response:
        """Alembic / Django contract migrations: the project's [migrations] settings, run by
        the framework under the same lock and gate as SQL files."""
        from nonstop.config import load_config
        from nonstop.migrate.frameworks import run

        tool, project, url = body.get("tool"), body.get("project"), body.get("url")
        if tool not in ("alembic", "django"):
            raise UsageError('contract: "tool" must be "alembic" or "django"')
        if not isinstance(project, str) or not os.path.isabs(project):
            raise UsageError('contract: "project" must be an absolute directory')
        if not isinstance(url, str) or not url:
            raise UsageError('contract: "url" is required')
        settings = load_config(Path(project) / "nonstop.toml").migrations
        if settings is None or settings.tool != tool:
            raise UsageError(f"contract: {project}/nonstop.toml has no [migrations] tool = {tool}")
        target = run.resolve(settings, Path(project), {**os.environ, "DATABASE_URL": url})
        applied = await self._under_deploy_lock(lambda: run.run_contract(target, self.paths.state))
        self.engine.emit("info", f"contract migrations applied: {', '.join(applied) or 'none'}")
        return json_response({"tool": tool, "applied": applied})

    async def _under_deploy_lock(self, work: Callable[[], T]) -> T:
        """Run ``work`` in a thread with the engine's deploy lock held and deploys refused, after
        checking no rollout runs: the gate and the run see the same releases (decision 0350)."""
        if self.contract_running:
            raise StateError("a contract migration is already running")
        async with self.engine._lock:
            running = self.engine.store.running_rollout()
            if running is not None:
                raise StateError(
                    f"rollout {running.id} ({running.candidate}) is in progress; a contract "
                    "migration waits until it has finished"
                )
            self.contract_running = True
            self.engine.emit("info", "contract migrations: gate checked under the deploy lock")
            try:
                return await asyncio.to_thread(work)
            finally:
                self.contract_running = False


def notifier(config: NonstopConfig) -> Notifier:
    """The ``[[notify]]`` webhooks (their ``$VAR`` secrets read now: refused before starting)."""
    from nonstop.notify.deliver import Notifier

    return Notifier(config.notify, config.app.name, lambda level, message: None)


def connect_notifications(notifier: Notifier, engine: Engine, flags: FlagService) -> None:
    """Feed the webhooks from the engine's transitions and the flags' guarded rollouts, and
    start delivering in the background (nonstop.notify.deliver)."""
    from nonstop.notify import notices

    if not notifier.targets:
        return
    notifier.emit = engine.emit
    engine.notify = notifier.notify
    flags.on_disabled = lambda flag, why: notifier.notify(
        notices.flag_disabled(flag, why, time.time())
    )
    notifier.start()


def rollout_standing(engine: Engine, row: RolloutRow) -> tuple[str | None, str]:
    """For the rollout in progress, its planner's one line on where it stands (what it waits
    for, the last real verdict) and why its checks cannot judge now ("" when they can);
    ``(None, "")`` for any other rollout or a planner that does not say."""
    active = engine.active
    if active is None or active.row.id != row.id:
        return None, ""
    standing = getattr(active.planner, "standing", None)
    not_judged = getattr(active.planner, "not_judged", None)
    return (
        standing(active.spec, active.state) if standing else None,
        not_judged(active.spec, active.state) if not_judged else "",
    )


def analysis_report(
    row: RolloutRow, standing: str | None = None, not_judged: str = ""
) -> dict[str, Any]:
    """The explain data of one rollout, from its stored state (``state.data`` keeps the
    background analysis, the current step's analysis and the sequential test).

    While the rollout runs, a check that has not judged a window yet is not "never measured"
    (the end-of-step summary): its verdict says why it has not judged (``not_judged``, from
    :func:`rollout_standing`), and ``standing`` says what the rollout waits for."""
    state = row.state
    data = state.get("data", {})
    step = int(state.get("step", 0))
    analyses = []
    for key, name in (("background", "background"), ("analysis", f"step {step + 1}")):
        if not data.get(key):
            continue
        run = AnalysisRun.from_dict(data[key])
        if run.checks:
            analyses.append(
                {
                    "name": name,
                    "phase": run.phase,
                    "verdict": _live_verdict(run, row.running, not_judged).to_dict(),
                    "rows": [_row(r) for r in explain(run)],
                    "history": [_row(r) for r in explain_history(run)],
                }
            )
    sequential = None
    if data.get("sequential"):
        test = SequentialRun.from_dict(data["sequential"])
        total = test.total
        sequential = {
            "e_value": test.e_value,
            "threshold": test.threshold,
            "alpha": test.alpha,
            "rejected": test.rejected,
            "canary": {"requests": total.canary_requests, "errors": total.canary_errors},
            "stable": {"requests": total.stable_requests, "errors": total.stable_errors},
            "row": _row(explain(AnalysisRun(sequential=test))[0]),
        }
    summary = {k: v for k, v in row.to_dict().items() if k != "state"}
    return {
        "rollout": summary,
        "phase": state.get("phase"),
        "step": step,
        "analyses": analyses,
        "sequential": sequential,
        "reason": row.reason,
        "standing": standing,
    }


def _live_verdict(run: AnalysisRun, running: bool, not_judged: str) -> Verdict:
    if not running or any(c.verdicts for c in run.checks):
        return conclude(run)
    why = not_judged or "its first window is still open"
    names = ", ".join(c.name for c in run.checks)
    return Verdict("inconclusive", "analysis", f"{names}: no window judged yet: {why}")


def _row(row: ExplainRow) -> dict[str, object]:
    return {**row.to_dict(), "unit": row.unit}


def tcp_listen(value: str | None) -> tuple[str, int] | None:
    """``[agent] listen``: None or ``unix:...`` -> the unix socket only; ``HOST:PORT`` -> also
    TCP, on a loopback address only (the API can stop every instance: it never faces a
    network; the token is required there as on the socket)."""
    if value is None or value.startswith("unix:"):
        if value not in (None, "unix:", f"unix:{STATE_SOCKET}"):
            raise UsageError(
                f'agent.listen: "{value}": the unix socket is always .nonstop/agent.sock '
                '(or its short fallback); use "127.0.0.1:PORT" to add a TCP listener'
            )
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        address, number = None, -1
    if not sep or address is None or not 0 < number < 65536:
        raise UsageError(f'agent.listen: expected "127.0.0.1:PORT" or "unix:PATH", got "{value}"')
    if not address.is_loopback:
        raise UsageError(
            f'agent.listen: "{value}" is not a loopback address; the agent API only listens '
            "on 127.0.0.1 or ::1 (reach it from elsewhere through an SSH tunnel)"
        )
    return host, number


STATE_SOCKET = ".nonstop/agent.sock"
