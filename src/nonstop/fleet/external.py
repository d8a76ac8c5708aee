"""``front.kind = "external"``: a load balancer nonstop does not manage, drained through each
host's front health path.

The load balancer (a cloud LB, a HAProxy or nginx someone else runs) health-checks every host's
router at ``front.health_path``. The host's router answers that path itself (HAProxy,
``router.front_health``; never logged, so no release is charged for it): 200 while the host
serves, 503 once the host's agent is told to drain it (``POST /v1/front``). The controller
drains a host before its instances change and waits ``front.drain_wait`` - the time the load
balancer takes to notice a failing check (its interval times its fall count) - so no new
request reaches the host from then on; requests already there finish on the host's own drain.
Putting a host back waits the same time, so the next batch leaves only once this one takes
traffic again: ``max_unavailable`` holds at the load balancer too.

Example: checks every 2 s, down after 3 failures -> ``drain_wait = "6s"`` at least.

No per-release request stream comes back from an external load balancer, so fleet-wide
analysis (``canary``) needs the edge; rolling and blue-green run here, each host still judging
its own instances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from nonstop.config.fleet import FleetConfig
from nonstop.errors import NonstopError, UsageError
from nonstop.fleet.plan import HostView, ReleaseCounts

HostCall = Callable[[str, str, str, Any], Awaitable[Any]]
"""``call(host, method, path, body)``: one request to a host's agent API."""


class Front(Protocol):
    """What sits in front of the fleet: the edge (fleet/edge.py) or an external load balancer."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def note_releases(self, releases: Mapping[str, str | None]) -> None: ...

    def counts_since(self, since: float) -> dict[str, ReleaseCounts]: ...

    async def apply(self, enabled: tuple[str, ...], views: Mapping[str, HostView]) -> None: ...

    def pinned(self) -> str | None:
        """The release stamped on every request (decision 0581); None: no stamp."""

    async def pin(self, release: str | None) -> None: ...


class ExternalFront:
    def __init__(self, fleet: FleetConfig, call: HostCall, say: Callable[[str], None]) -> None:
        self.hosts = tuple(h.name for h in fleet.web_hosts)
        self.wait = fleet.front.drain_wait
        self.call = call
        self.say = say

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def note_releases(self, releases: Mapping[str, str | None]) -> None:
        return None

    def counts_since(self, since: float) -> dict[str, ReleaseCounts]:
        return {}  # the load balancer's requests are not seen here

    def pinned(self) -> str | None:
        return None  # a load balancer nonstop does not manage stamps nothing

    async def pin(self, release: str | None) -> None:
        if release is not None:
            raise UsageError(
                f"an external load balancer cannot pin {release}: each host switches "
                '(fleet.front.switch = "hosts")'
            )

    async def apply(self, enabled: tuple[str, ...], views: Mapping[str, HostView]) -> None:
        """Each host's front health says what ``enabled`` says; when any changed, wait for the
        load balancer to see it. A host that does not answer keeps what it said (a host that
        is cut off gets no traffic anyway) and is set again on the next apply."""
        wanted = [(name, name in enabled) for name in self.hosts]
        results = await asyncio.gather(
            *(self.call(name, "POST", "/v1/front", {"serving": on}) for name, on in wanted),
            return_exceptions=True,
        )
        changed = []
        for (name, on), result in zip(wanted, results, strict=True):
            if isinstance(result, NonstopError):
                self.say(f"{name}: front health not set: {result}")
            elif isinstance(result, BaseException):
                raise result
            elif result.get("changed"):
                changed.append(f"{name} {'serving' if on else 'draining'}")
        if changed:
            self.say(f"front: {', '.join(changed)}; waiting {self.wait:g}s for the load balancer")
            await asyncio.sleep(self.wait)  # the load balancer's detection time (configured)
