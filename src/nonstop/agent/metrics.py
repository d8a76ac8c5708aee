"""The agent's ``/metrics``: Prometheus exposition of what the agent knows, mountable on any
aiohttp application (the agent's socket and TCP listener, the dashboard's listener).

    nonstop_info{version, app, router}                      1
    nonstop_agent_start_time_seconds                        gauge
    nonstop_router_up                                       1 when the router answers
    nonstop_agent_degraded                                  1 while any part is degraded
    nonstop_degraded{what}                                  1 per degraded part (engine, router...)
    nonstop_active_release{release}                         1 for the release serving
    nonstop_rollout_in_progress                             0 or 1
    nonstop_rollout_phase{rollout, strategy, candidate, stable, phase}   1 for the current phase
    nonstop_rollout_step                                    1-based step of the rollout (0: none)
    nonstop_rollout_paused                                  0 or 1
    nonstop_rollouts_total{strategy, rollback, outcome}     finished rollouts, ever (the store)
    nonstop_weight_set_percent{release}                     the weights the router was given
    nonstop_weight_measured_percent{release}                each release's share of the requests
                                                            of the last MEASURED_WINDOW seconds
    nonstop_instances{release, state}                       instances per release and state
    nonstop_instance_restarts_total{release, instance}      restarts by the supervisor
    nonstop_notify_deliveries_total{receiver, result}       delivered, failed, dropped
    nonstop_requests_total{release, code_class}             (drivers/metrics/prometheus.py)
    nonstop_request_proxy_errors_total{release}
    nonstop_request_duration_seconds{release}               histogram

Everything is read at scrape time from the agent's own state: the router's health is asked
once per scrape (its admin API), the rest is memory.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from nonstop.config.schema import NonstopConfig
    from nonstop.drivers.metrics import RequestStats
    from nonstop.engine.engine import Engine
    from nonstop.notify.deliver import Notifier

MEASURED_WINDOW = 10
"""Whole seconds behind ``nonstop_weight_measured_percent`` (the last complete ones)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MetricsState(Protocol):
    """What the exposition reads (the Agent has it)."""

    engine: Engine
    stats: RequestStats
    config: NonstopConfig
    started_at: float
    notifier: Notifier | None


@dataclass
class Scrape:
    """One scrape's facts that need I/O, gathered before the (synchronous) collector runs."""

    router_up: bool
    now: float
    extra: dict[str, Any] = field(default_factory=dict)


class AgentCollector:
    """A prometheus_client collector over the agent's state."""

    def __init__(self, state: MetricsState, scrape: Scrape) -> None:
        self.state = state
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        yield from self._agent()
        yield from self._rollout()
        yield from self._weights()
        yield from self._instances()
        yield from self._notify()

    def _agent(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        from nonstop import __version__

        config, health = self.state.config, self.state.engine.health
        info = InfoMetricFamily("nonstop", "The agent's version, app and router kind.")
        info.add_metric(
            [], {"version": __version__, "app": config.app.name, "router": config.router.kind}
        )
        yield info
        yield _gauge(
            "nonstop_agent_start_time_seconds",
            "When the agent started (Unix time).",
            self.state.started_at,
        )
        yield _gauge(
            "nonstop_router_up",
            "1 when the router answers its admin API.",
            int(self.scrape.router_up),
        )
        yield _gauge(
            "nonstop_agent_degraded",
            "1 while any part of the agent is degraded.",
            int(health.degraded),
        )
        degraded = GaugeMetricFamily(
            "nonstop_degraded",
            "1 per degraded part of the agent (`status` says why).",
            labels=["what"],
        )
        for name in sorted(health.problems):
            degraded.add_metric([name], 1)
        yield degraded
        active = GaugeMetricFamily(
            "nonstop_active_release", "1 for the release that serves.", labels=["release"]
        )
        serving = self.state.engine.store.desired_state().active_release
        if serving:
            active.add_metric([serving], 1)
        yield active

    def _rollout(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        current = self.state.engine.active
        yield _gauge(
            "nonstop_rollout_in_progress", "1 while a rollout runs.", int(current is not None)
        )
        labels = ["rollout", "strategy", "candidate", "stable", "phase"]
        phase = GaugeMetricFamily(
            "nonstop_rollout_phase", "1 for the running rollout's phase.", labels=labels
        )
        step, paused = 0, 0
        if current is not None:
            row, state = current.row, current.state
            phase.add_metric(
                [str(row.id), row.strategy, row.candidate, row.stable or "", state.phase], 1
            )
            step, paused = state.step + 1, int(state.paused)
        yield phase
        yield _gauge("nonstop_rollout_step", "The running rollout's step, from 1 (0: none).", step)
        yield _gauge("nonstop_rollout_paused", "1 while the running rollout is paused.", paused)
        yield self._finished()

    def _finished(self) -> Metric:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "nonstop_rollouts",
            "Finished rollouts by strategy, rollback or not, and outcome.",
            labels=["strategy", "rollback", "outcome"],
        )
        for strategy, rollback, outcome, count in self.state.engine.store.rollout_counts():
            family.add_metric([strategy, str(rollback).lower(), outcome], count)
        return family

    def _weights(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        set_ = GaugeMetricFamily(
            "nonstop_weight_set_percent",
            "Traffic weights the router was given.",
            labels=["release"],
        )
        for release, weight in sorted((self.state.engine.weights or {}).items()):
            set_.add_metric([release], weight)
        yield set_
        measured = GaugeMetricFamily(
            "nonstop_weight_measured_percent",
            f"Each release's share of the requests of the last {MEASURED_WINDOW} whole seconds.",
            labels=["release"],
        )
        for release, share in measured_shares(self.state.stats, self.scrape.now).items():
            measured.add_metric([release], share)
        yield measured

    def _instances(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counts: dict[tuple[str, str], int] = {}
        restarts = CounterMetricFamily(
            "nonstop_instance_restarts",
            "Restarts of a live instance by its supervisor.",
            labels=["release", "instance"],
        )
        for live in sorted(self.state.engine.instances.live.values(), key=lambda x: x.id):
            key = (live.release, live.state)
            counts[key] = counts.get(key, 0) + 1
            restarts.add_metric([live.release, live.id], live.restarts)
        instances = GaugeMetricFamily(
            "nonstop_instances", "Instances per release and state.", labels=["release", "state"]
        )
        for (release, state), count in sorted(counts.items()):
            instances.add_metric([release, state], count)
        yield instances
        yield restarts

    def _notify(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "nonstop_notify_deliveries",
            "Webhook notices by receiver and result.",
            labels=["receiver", "result"],
        )
        notifier = self.state.notifier
        for receiver, result, count in notifier.counts() if notifier is not None else ():
            family.add_metric([receiver, result], count)
        yield family


def _gauge(name: str, documentation: str, value: float) -> Metric:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, value=value)


def measured_shares(stats: RequestStats, now: float) -> dict[str, float]:
    """Percent of the requests of the last MEASURED_WINDOW whole seconds per release; no
    entry at all without traffic (a share of nothing is not 0%).

    >>> from nonstop.drivers.metrics import RequestStats
    >>> measured_shares(RequestStats(), 1000.5)
    {}
    """
    end = math.floor(now)
    counts = stats.counts(end - MEASURED_WINDOW, end)
    total = sum(counts.values())
    if not total:
        return {}
    return {release: 100.0 * n / total for release, n in sorted(counts.items())}


async def exposition(state: MetricsState) -> bytes:
    """The text format of every metric above, the request metrics included."""
    from prometheus_client import CollectorRegistry, generate_latest

    from nonstop.drivers.metrics import register_request_metrics

    router_up = await _router_up(state)
    registry = CollectorRegistry()
    registry.register(AgentCollector(state, Scrape(router_up, time.time())))
    register_request_metrics(registry, state.stats)
    return generate_latest(registry)


async def _router_up(state: MetricsState) -> bool:
    try:
        return bool(await state.engine.router.alive())
    except Exception:  # a scrape reports the router down, it never fails because of it
        return False


def metrics_handler(state: MetricsState, token: str | None) -> Handler:
    """A ``GET /metrics`` handler; with ``token``, a scrape must send ``Authorization: Bearer
    TOKEN`` (Prometheus: ``authorization: {credentials: TOKEN}``), compared in constant time."""
    expected = f"Bearer {token}".encode() if token else None

    async def handler(request: web.Request) -> web.StreamResponse:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response(
                    {"error": "missing or wrong metrics token ([metrics] token)"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="nonstop metrics"'},
                )
        body = await exposition(state)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return handler


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_route(state: MetricsState, token: str | None, path: str = "/metrics") -> web.RouteDef:
    """The route to add to an application: ``app.add_routes([metrics_route(agent, token)])``.
    A listener that may face a network must pass a token (the agent's own sockets are local)."""
    return web.get(path, metrics_handler(state, token))


def metrics_token(config: NonstopConfig) -> str | None:
    """``[metrics] token``, ``$VAR`` read from the environment (a usage error when unset)."""
    from nonstop.config.load import resolve

    token = config.metrics.token
    return resolve(token, "metrics.token") if token else None
