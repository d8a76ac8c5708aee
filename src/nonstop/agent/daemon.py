"""The long-running agent: supervises instances and the router, runs rollouts, serves the API.

The agent is disposable by design: instances and the router run in their own sessions and
outlive it, and everything it knows is in the store. ``kill -9`` and ``nonstop up`` again only
costs the time to re-adopt; no request is dropped (invariant 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from nonstop import __version__
from nonstop.agent.api import auth_middleware, json_response, read_json, tail_file
from nonstop.agent.paths import Paths
from nonstop.analysis.checks import AnalysisRun, conclude
from nonstop.analysis.explain import ExplainRow, explain, explain_history
from nonstop.analysis.sequential import SequentialRun
from nonstop.config.schema import NonstopConfig
from nonstop.drivers.metrics import RequestStats, register_request_metrics
from nonstop.drivers.router.base import Router
from nonstop.engine.engine import DeployRequest, Engine, MeasurementSource
from nonstop.engine.instances import InstanceManager
from nonstop.errors import StateError, UsageError
from nonstop.flags.service import FlagService
from nonstop.store import RolloutRow, open_store

if TYPE_CHECKING:
    from nonstop.drivers.metrics.prometheus_provider import PrometheusSource


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
        health_path=config.health.path,
    )
    return registry.make_router(config.router.kind, paths.state / "router", settings)


class Agent:
    def __init__(self, paths: Paths, config: NonstopConfig) -> None:
        self.paths = paths
        self.config = config
        self.stop_event = asyncio.Event()
        self.stop_instances = False
        self.started_at = time.time()

    async def run(self) -> None:
        self.paths.ensure()
        lock = AgentLock(self.paths.lock)
        lock.acquire()
        try:
            await self._serve()
        finally:
            lock.release()

    async def _serve(self) -> None:
        from nonstop.drivers.runtime.local import LocalRuntime

        token = self.paths.read_or_create_token()
        store = open_store(self.paths.state)
        router = make_router(self.paths, self.config)
        stats = RequestStats()
        runtime = LocalRuntime(log_dir=self.paths.logs)

        def instances(engine: Engine) -> InstanceManager:
            return InstanceManager(
                store,
                runtime,
                self.paths.logs,
                self.paths.state,
                engine.config_of,
                engine.wake,
                engine.emit,
            )

        measurements, poller = self._measurement_source(stats)
        engine = Engine(store, instances, router, measurements, self.paths.state)
        self.engine = engine
        self.stats = stats
        self.flags = FlagService(
            self.paths.state, self.config.flags, self._flag_error_rate, engine.emit
        )
        await engine.recover()
        self.paths.pidfile.write_text(str(os.getpid()))
        runner = await self._start_api(token)
        await self.flags.start()
        tasks = [
            asyncio.create_task(engine.run(self.stop_event)),
            asyncio.create_task(self._consume_requests(router, stats)),
        ]
        if poller is not None:
            poller.on_error = lambda message: engine.emit("warning", f"metrics: {message}")
            tasks.append(asyncio.create_task(poller.run(self.stop_event)))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        store.add_event(f"agent {os.getpid()} started (nonstop {__version__})")
        try:
            await self.stop_event.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.stop_instances:
                await engine.instances.stop_all()
                await router.stop()
                store.add_event("agent stopped with every instance and the router")
            else:
                await engine.instances.close()
                await router.close()
                store.add_event("agent stopped; instances and router keep serving")
            await self.flags.close()
            await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                self.paths.pidfile.unlink()
            store.close()

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
                self.engine.emit("warning", f"request stream interrupted: {exc}")
            await asyncio.sleep(1.0)

    def _flag_error_rate(self, since: float) -> tuple[int, int]:
        """(errors, requests) of the active release since ``since``, for guarded flag rollouts."""
        release = self.engine.store.get("active_release")
        if not release:
            return 0, 0
        measurement = self.stats.snapshot(str(release), since, time.time())
        return measurement.errors, measurement.requests

    async def _start_api(self, token: str) -> web.AppRunner:
        app = web.Application(middlewares=[auth_middleware(token, frozenset({"/metrics"}))])
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
                web.get("/v1/logs", self.h_logs),
                web.post("/v1/shutdown", self.h_shutdown),
                web.get("/metrics", self.h_metrics),
                *self.flags.admin_routes(),
            ]
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()
        old_umask = os.umask(0o177)
        try:
            site = web.UnixSite(runner, str(self.paths.socket))
            await site.start()
        finally:
            os.umask(old_umask)
        os.chmod(self.paths.socket, 0o600)
        return runner

    # -- handlers ----------------------------------------------------------------------------

    async def h_status(self, request: web.Request) -> web.Response:
        status = self.engine.status()
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
        }
        status["app"] = self.config.app.name
        return json_response(status)

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
        row = await self.engine.deploy(
            DeployRequest(release, Path(path), dict(env), config, strategy)
        )
        return json_response(row.to_dict(), 202)

    async def h_rollouts(self, request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", 50)
        return json_response([r.to_dict() for r in self.engine.store.rollouts(limit)])

    async def h_rollout(self, request: web.Request) -> web.Response:
        rollout_id = _int(request.match_info["id"], "rollout id")
        row = self.engine.store.rollout(rollout_id)
        if row is None:
            return json_response({"error": f"no rollout {rollout_id}"}, 404)
        data = row.to_dict()
        data["journal"] = self.engine.store.journal(rollout_id)
        data["events"] = self.engine.store.events(rollout_id=rollout_id)
        return json_response(data)

    async def h_events(self, request: web.Request) -> web.Response:
        after = _int_param(request, "after", 0)
        rollout = request.query.get("rollout")
        events = self.engine.store.events(
            after=after,
            rollout_id=_int(rollout, "rollout") if rollout else None,
            limit=_int_param(request, "limit", 500),
        )
        return json_response(events)

    async def h_analysis(self, request: web.Request) -> web.Response:
        """What each check of a rollout saw and decided: ``?rollout=ID``, else the running
        rollout, else the last one."""
        store = self.engine.store
        rollout = request.query.get("rollout")
        if rollout:
            row = store.rollout(_int(rollout, "rollout"))
            if row is None:
                return json_response({"error": f"no rollout {rollout}"}, 404)
        else:
            row = store.running_rollout() or next(iter(store.rollouts(1)), None)
            if row is None:
                return json_response({"error": "no rollout yet: nothing to explain"}, 404)
        return json_response(analysis_report(row))

    async def h_command(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        command = body.get("command")
        if not isinstance(command, str):
            raise UsageError('command: "command" is required')
        return json_response(self.engine.command(command).to_dict())

    async def h_rollback(self, request: web.Request) -> web.Response:
        row = await self.engine.rollback()
        return json_response(row.to_dict(), 202)

    async def h_logs(self, request: web.Request) -> web.Response:
        lines = _int_param(request, "lines", 50)
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
        self.stop_instances = bool(body.get("stop_instances", False))
        asyncio.get_running_loop().call_later(0.05, self.stop_event.set)
        return json_response({"stopping": True, "stop_instances": self.stop_instances})

    async def h_metrics(self, request: web.Request) -> web.Response:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        register_request_metrics(registry, self.stats)
        return web.Response(body=generate_latest(registry), content_type="text/plain")


def analysis_report(row: RolloutRow) -> dict[str, Any]:
    """The explain data of one rollout, from its stored state (``state.data`` keeps the
    background analysis, the current step's analysis and the sequential test)."""
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
                    "verdict": conclude(run).to_dict(),
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
    }


def _row(row: ExplainRow) -> dict[str, object]:
    return {**row.to_dict(), "unit": row.unit}


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{what}: expected an integer, got {value!r}") from None


def _int_param(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    return default if value is None else _int(value, name)
