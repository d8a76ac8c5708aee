"""The router port: what the engine needs from whatever owns the user-facing listen address.

Caddy is the default adapter (drivers/router/caddy.py); HAProxy and nginx implement the same
port. The engine hands a router the *whole* desired routing table each time (declarative, so
applying it twice is the same as once, invariant 4); the adapter makes the switch atomic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Upstream:
    """One instance that may receive traffic."""

    instance_id: str
    release: str
    address: str
    """``host:port`` the router dials."""
    weight: int
    """Relative weight among all upstreams; 0 keeps it out of rotation (draining)."""


@dataclass(frozen=True, slots=True)
class RouteTable:
    upstreams: tuple[Upstream, ...]

    def weight_of(self, release: str) -> int:
        return sum(u.weight for u in self.upstreams if u.release == release)


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One request as the router saw it: the raw material of per-release measurements.

    The contract every driver keeps (the release an address belongs to is charged for it)::

        what happened                                       upstream            proxy_error
        an upstream answered (any status, its own 5xx too)  that upstream       False
        the router tried upstreams and the last one failed  the LAST one tried  True (5xx)
          (refused, reset, timed out, bad response)
        the router tried none (empty pool, all marked down) None                True (5xx)

    So a release whose instances refuse, reset or hang is blamed for the router's 502/503/504
    through the address of the instance that failed; only ``upstream=None`` proxy errors are
    left for the metrics layer to charge to the release that was meant to serve
    (drivers/metrics/request_stats.py). A router answer that is not a failure (the reserved
    table probe, docs/router.md) never appears in the stream.
    """

    ts: float
    """Epoch seconds when the request ended."""
    upstream: str | None
    """``host:port`` of the upstream that answered or, for a proxy error, the last upstream the
    router tried; None only when it tried none."""
    status: int
    duration_ms: float
    proxy_error: bool = False
    """True when the router produced the response itself (5xx) because no upstream answered."""

    @classmethod
    def seen(
        cls, ts: float, upstream: str | None, status: int, duration_ms: float, *, answered: bool
    ) -> RequestEvent:
        """A request as a router's log line tells it: ``answered`` when an upstream sent the
        response; a 5xx no upstream answered is the router's own (a proxy error)."""
        return cls(ts, upstream, status, duration_ms, not answered and status >= 500)


class Router(Protocol):
    """What every router kind does. One more method is optional: ``apply_slots`` (see
    :class:`ReleaseSlots`), offered by HAProxy only (``router.release_slots``); Caddy and nginx
    do not have it, and a caller checks ``isinstance(router, ReleaseSlots)`` before using it."""

    async def start(self) -> None:
        """Start the router process, or adopt the one already running (agent restart). The
        listen address keeps serving through an agent restart: adopting never restarts it."""

    async def apply(self, table: RouteTable) -> None:
        """Route exactly ``table`` from now on, atomically. Requests already in flight finish on
        the upstream that took them."""

    async def in_flight(self) -> dict[str, int]:
        """Open requests and streams per upstream address (used to decide when draining is done)."""

    async def alive(self) -> bool:
        """Whether the router process is up and answering its admin interface."""

    async def stop(self) -> None:
        """Stop the router (``nonstop down``)."""

    async def close(self) -> None:
        """Let go of the router without stopping it (the agent exits; traffic keeps flowing)."""

    def events(self) -> AsyncIterator[RequestEvent]:
        """Per-request events, as they happen, for as long as the router runs."""


@runtime_checkable
class ReleaseSlots(Protocol):
    """Optional part of the router port (HAProxy only, decision 0581): requests stamped
    ``X-Nonstop-Release: R`` by the fleet's edge go to R's ready instances while R has a slot
    with a usable one, else to the table as any other request."""

    async def apply_slots(self, slots: Mapping[str, Sequence[str]]) -> None:
        """Releases in priority order -> addresses of their ready instances; the first two
        with an address get a slot, a release that stays keeps its own. Durable first and
        idempotent like ``apply``; a release that leaves stops being honoured before its
        instances leave its slot (their open requests finish and count in ``in_flight``)."""
