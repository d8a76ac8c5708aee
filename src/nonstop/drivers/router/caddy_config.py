"""Caddy's JSON config for a route table: pure, so every choice below is tested from tables.

One HTTP server on ``listen`` with two routes: the reserved table probe (admin.py), then::

    log_append upstream        = {http.reverse_proxy.upstream.hostport}
    log_append upstream_status = {http.reverse_proxy.status_code}
    reverse_proxy (weighted_round_robin over the weight > 0 upstreams)  | static_response 503

``log_append`` runs the rest of the chain first and adds its field on the way back, so each
access-log entry names the upstream that answered; ``upstream_status`` is empty when no upstream
answered, which is how the request stream tells the router's own 502/503 from an upstream's.

When health checks leave no upstream of a pool of two or more in rotation, Caddy's proxy fails
the request with 503 "no upstreams available" before it touched the body. The server's error
routes catch exactly that error and send the request to the same pool through a second proxy
that ignores health (Envoy's panic mode, decision 0570)::

    errors: match {http.error.status_code} == 503 && {http.error.message} == "no upstreams ..."
            log_append upstream, upstream_status; reverse_proxy (same pool, no health checks)

Caddy's ``weighted_round_robin`` sends runs of consecutive requests: with weights [90, 10] it
sends 90 to the first upstream, then 10 to the second. The weights are divided by their greatest
common divisor first ([9, 1]), so the runs are as short as the ratio allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

from nonstop.drivers.router.admin import PROBE_HEADER, PROBE_PATH, PROBE_VALUE, table_hash
from nonstop.drivers.router.base import RouteTable, Upstream
from nonstop.drivers.router.settings import ProxyTimings
from nonstop.drivers.router.table import NO_UPSTREAM_BODY

SERVER_NAME = "nonstop"
NO_UPSTREAM_ERROR = "no upstreams available"
"""The message of the error Caddy's proxy returns (503) when no upstream is available: every one
is marked down by a health check. Matched by the panic route (:func:`_panic_routes`)."""
STREAMS_KEEP = "87600h"
"""``stream_close_delay`` when streams must outlive reloads: Caddy has no "never" (0 closes them
at once), so ten years, well inside its int64-nanosecond durations."""
ACCESS_LOGGER = f"http.log.access.{SERVER_NAME}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyTuning(ProxyTimings):
    """How Caddy treats a failing upstream and a reload. Seconds throughout (decision 0331).

    ``drain_timeout``: requests that started before a reload keep their upstream for up to this
    long (the HTTP app's ``grace_period``).

    ``stream_grace``: Caddy's ``stream_close_delay``. A reload retires the whole old handler, and
    when that delay passes Caddy closes *every* stream (websocket, upgraded connection) that
    handler opened, with close code 1001, to instances that stay in the table too: a rolling
    deploy would disconnect every client at each step. So by default (None) the delay is
    :data:`STREAMS_KEEP` (ten years): a stream lives as long as its client and its instance
    keep it, and a draining instance's streams end when the engine stops it (decision 0460).

    Retries: a request whose upstream fails is tried again at once on another upstream, up to
    ``retries`` times (at least 2, at least the pool size): any method when the connection
    could not be made (nothing was sent), GET only when it failed after that (reset, timeout,
    bad response). There is deliberately no wait between tries (no ``try_duration`` /
    ``try_interval``): Caddy ends a waiting retry when a reload retires the handler, which is
    how a crashed instance used to cost a 502 at the very reload that removed it.

    Passive health: an upstream whose connection or round trip failed once (``max_fails`` 1) is
    out of selection for ``mark_down_for``, so the retry lands elsewhere. The marks live in
    Caddy's global host pool, keyed by address, so they survive reloads.

    Health checks (passive and active) are configured only when the pool has two upstreams or
    more: they decide where a request goes instead, and a lone upstream has no instead.

    Active health (only with ``health_path``): Caddy GETs ``health_path`` on every upstream
    every ``health_interval``; ``health_fails`` answers that are not 2xx or do not come within
    ``health_timeout`` take it out of rotation until one check passes: a hung instance (SIGSTOP,
    a deadlock) leaves rotation in about ``health_fails * health_interval + health_timeout``.

    ``upstream_timeout``: how long Caddy waits for an upstream's response headers (not for the
    body or a stream) before answering 504 naming that upstream. Long on purpose: it is the
    bound on a legitimately slow request, not the way a hung instance is found.
    """

    mark_down_for: float = 2.0
    dial_timeout: float = 1.0


def duration(seconds: float) -> str:
    """Caddy duration string, in whole milliseconds: 0.05 -> "50ms"."""
    return f"{round(seconds * 1000)}ms"


def weights(upstreams: list[Upstream]) -> list[int]:
    """Weights divided by their gcd: [90, 10] -> [9, 1]; [50, 50] -> [1, 1]."""
    divisor = reduce(math.gcd, (u.weight for u in upstreams), 0) or 1
    return [u.weight // divisor for u in upstreams]


def build_config(
    table: RouteTable,
    *,
    listen: str,
    admin_socket: Path,
    events_socket: Path,
    tuning: ProxyTuning,
) -> dict[str, Any]:
    """The whole Caddy config for ``table``; loading it is one atomic switch."""
    return {
        "admin": {"listen": f"unix/{admin_socket}|0600", "config": {"persist": False}},
        "logging": _logging(events_socket),
        "apps": {
            "http": {
                "grace_period": duration(tuning.drain_timeout),
                "servers": {SERVER_NAME: _server(table, listen, tuning)},
            }
        },
    }


def _probe_route(table: RouteTable) -> dict[str, Any]:
    """The reserved table probe (drivers/router/admin.py), answered by Caddy, never logged."""
    return {
        "match": [{"path": [PROBE_PATH], "header": {PROBE_HEADER: [PROBE_VALUE]}}],
        "handle": [
            {"handler": "vars", "log_skip": True},
            {
                "handler": "static_response",
                "status_code": 200,
                "headers": {"Content-Type": ["text/plain; charset=utf-8"]},
                "body": table_hash(table) + "\n",
            },
        ],
        "terminal": True,
    }


def _logging(events_socket: Path) -> dict[str, Any]:
    # Only our access log goes to the socket; Caddy's own log stays on stderr (caddy.log).
    # soft_start: Caddy starts even when nobody listens yet; entries written while the socket is
    # down go to stderr, and Caddy redials at most every 10 s (see docs/router.md).
    return {
        "logs": {
            "default": {"exclude": [ACCESS_LOGGER]},
            SERVER_NAME: {
                "writer": {"output": "net", "address": f"unix/{events_socket}", "soft_start": True},
                "encoder": {
                    "format": "filter",
                    "wrap": {"format": "json"},
                    "fields": {
                        "request": {"filter": "delete"},
                        "resp_headers": {"filter": "delete"},
                        "user_id": {"filter": "delete"},
                    },
                },
                "include": [ACCESS_LOGGER],
            },
        }
    }


def _server(table: RouteTable, listen: str, tuning: ProxyTuning) -> dict[str, Any]:
    pool = [u for u in table.upstreams if u.weight > 0]
    final = _reverse_proxy(pool, tuning) if pool else _no_upstream()
    server: dict[str, Any] = {
        "listen": [listen],
        "protocols": ["h1", "h2"],
        "automatic_https": {"disable": True},
        "logs": {"default_logger_name": SERVER_NAME},
        "routes": [_probe_route(table), {"handle": [*_appends(), final]}],
    }
    if "health_checks" in final:
        server["errors"] = {"routes": _panic_routes(pool, tuning)}
    return server


def _appends() -> list[dict[str, Any]]:
    return [
        _append("upstream", "{http.reverse_proxy.upstream.hostport}"),
        _append("upstream_status", "{http.reverse_proxy.status_code}"),
    ]


def _append(key: str, value: str) -> dict[str, Any]:
    return {"handler": "log_append", "key": key, "value": value}


def _no_upstream() -> dict[str, Any]:
    return {
        "handler": "static_response",
        "status_code": 503,
        "headers": {"Content-Type": ["text/plain; charset=utf-8"], "Retry-After": ["1"]},
        "body": NO_UPSTREAM_BODY,
    }


def _panic_routes(pool: list[Upstream], tuning: ProxyTuning) -> list[dict[str, Any]]:
    """Panic mode: when health checks have taken every upstream of the pool out of rotation,
    route to all of them anyway, by weight (Envoy's panic threshold at 0 %).

    Every instance in the table passed its readiness check before the engine routed it
    (invariant 1), so "all unhealthy" on a busy machine is far more often "all slow to answer
    the health path within ``health_timeout``" than "all dead": a 503 for every user for as
    long as that lasts is the worst answer. A dead upstream still costs nothing here: its
    refused dial is retried at once on the next one. And a hung one stays out while another
    passes its checks: panic applies only when *none* does.

    Only the error of the health-aware proxy that found no upstream is caught (503 with
    Caddy's message): the request's body is untouched then. Its 502s and 504s (an upstream
    tried and failed) are answered as they are; the ``log_append`` handlers here overwrite the
    empty upstream fields the main route logged."""
    match = f'{{http.error.status_code}} == 503 && {{http.error.message}} == "{NO_UPSTREAM_ERROR}"'
    panic = _reverse_proxy(pool, tuning, health=False)
    return [{"match": [{"expression": match}], "handle": [*_appends(), panic]}]


def _reverse_proxy(
    pool: list[Upstream], tuning: ProxyTuning, *, health: bool = True
) -> dict[str, Any]:
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": u.address} for u in pool],
        "transport": {
            "protocol": "http",
            "dial_timeout": duration(tuning.dial_timeout),
            "response_header_timeout": duration(tuning.upstream_timeout),
        },
        "load_balancing": {
            "selection_policy": {"policy": "weighted_round_robin", "weights": weights(pool)},
            "retries": max(2, len(pool)),
        },
        "stream_close_delay": (
            STREAMS_KEEP if tuning.stream_grace is None else duration(tuning.stream_grace)
        ),
    }
    # Health only decides where a request goes instead: with one upstream there is nowhere else,
    # and a mark (one refused dial, one slow health answer on a busy machine) would turn into
    # seconds of 503s for a single-instance app that was only blinking.
    if health and len(pool) > 1:
        proxy["health_checks"] = _health(tuning)
    return proxy


def _health(tuning: ProxyTuning) -> dict[str, Any]:
    health: dict[str, Any] = {
        "passive": {"fail_duration": duration(tuning.mark_down_for), "max_fails": 1}
    }
    if tuning.health_path:
        health["active"] = {
            "uri": tuning.health_path,
            "interval": duration(tuning.health_interval),
            "timeout": duration(tuning.health_timeout),
            "fails": tuning.health_fails,
            "passes": 1,
        }
    return health
