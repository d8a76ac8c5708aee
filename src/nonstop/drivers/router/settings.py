"""What every router kind is configured with (``[router]`` and ``[app]`` in nonstop.toml), and
the proxy timings the drivers' own tunings (caddy_config.ProxyTuning,
haproxy_config.HAProxyTuning) share. Seconds throughout (decision 0331)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Self

from nonstop.errors import RouterError


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyTimings:
    drain_timeout: float = 30.0
    """How long a request or stream on an upstream leaving the table may still run."""
    upstream_timeout: float = 30.0
    """How long the router waits for an upstream's response before a 504 naming it."""
    health_path: str | None = None
    """Active health checks GET this path; without it they only connect."""
    health_interval: float = 0.5
    health_timeout: float = 1.0
    health_fails: int = 2
    stream_grace: float | None = None
    """How long a long-lived connection (a WebSocket, a stream) to an upstream may outlive the
    routing change that took that upstream out of the table before the router closes it. None
    (the default): the router never closes it; the instance's own close ends it (the engine
    stops a drained instance at its drain deadline). Caddy applies a number to every stream
    opened before the change, to instances that stay too (decision 0460)."""
    stream_idle_timeout: float = 3600.0
    """How long an upgraded connection (a WebSocket) may carry nothing before the router
    closes it. Not ``upstream_timeout``: that bounds a slow response, and a chat client may
    be silent for minutes. HAProxy's ``timeout tunnel``, nginx's ``proxy_read_timeout`` for
    upgrade requests; Caddy has no idle timeout on streams (it never closes an idle one)."""

    @classmethod
    def like(cls, other: ProxyTimings, **extra: Any) -> Self:
        """A ``cls`` with ``other``'s timings and ``extra`` (the driver's own settings)."""
        shared = {f.name: getattr(other, f.name) for f in fields(ProxyTimings)}
        return cls(**shared, **extra)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterSettings(ProxyTimings):
    """A router's settings, whatever its kind: the registry builds any kind from these."""

    listen: str
    """``host:port`` or ``:port`` users connect to."""
    binary: Path | None = None
    """The router's executable; None: the driver looks where that router is installed."""
    event_queue_size: int = 10_000
    """Request events held for a slow consumer before new ones are dropped (and counted)."""
    start_timeout: float = 15.0
    """How long a router process may take to answer its admin interface after a start."""
    confirm_timeout: float = 5.0
    """How long the listener may take to serve a table just applied (the table probe)."""
    front_health: str | None = None
    """A path the router answers itself for a load balancer in front of it: 200 while it
    serves, 503 while drained (``set_front``) or with no upstream in rotation. HAProxy only."""
    release_slots: bool = False
    """A host's router behind a stamping edge: a request carrying ``X-Nonstop-Release: R``
    goes to the slot backend holding R's ready instances when it has a usable one, else the
    table as usual (``apply_slots``; decision 0581). HAProxy only; the others ignore it."""
    release_stamp: bool = False
    """The fleet's edge: every request gets ``X-Nonstop-Release`` from the release map (a
    client's own is removed), and with ``health_path`` the checks carry it too
    (``set_release``; decision 0581). HAProxy only; the others ignore it."""

    def __post_init__(self) -> None:
        validate_listen(self.listen)


def validate_listen(listen: str) -> str:
    """``host:port`` or ``:port``; returns it unchanged or raises RouterError."""
    _host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise RouterError(f'router listen address must be "host:port" or ":port", got {listen!r}')
    return listen
