"""The edge: an HAProxy in front of the fleet, managed through its runtime API.

It is the same HAProxy driver a single host uses (drivers/router/haproxy.py, decision 0310),
with hosts where a host has instances: one server per web host (``address:router_port``, the
host's own router), charged to the release that host serves. Its per-request stream (decision
0311) gives the fleet planner per-release counts at the front: the canary analysis reads the
candidate's error rate over every canary host from here.

A host out of the batch's way has weight 1; a drained host weight 0 (in-flight requests finish,
no new ones). Active health checks connect to each host's router every 0.5 s (down after 2
failures), so a host whose link is cut leaves rotation in about a second, before any planner
notices. They only connect: an HTTP check through the host's router would be a request that
router charges to the release it serves (decision 0340), and a host's own watch would count the
edge's checks as its traffic. The edge process outlives the controller: a new controller adopts
it.

With the edge switch (``fleet.front.switch``, decision 0581) the edge also pins a release: it
replaces any ``X-Nonstop-Release`` a client sent with the pinned one, and each host's router
sends such a request to that release's ready instances (held or kept warm). A blue-green switch
or a rollback is then one runtime-API command here, for every host at once. Its checks become
HTTP checks of each host's ``front.health_path`` carrying the pinned release, which the host's
router answers itself (never logged, so never charged to a release): 200 while it has ready
instances of that release, so a host that cannot serve the pinned release leaves rotation
instead of serving another one. While a release is pinned, every request the edge sends is
charged to it. Whether it pins or not, the edge drops any ``X-Nonstop-Release`` a client sent:
a client never chooses a release, even where hosts honour the header without an edge switch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from nonstop.config.fleet import FleetConfig
from nonstop.drivers.router.base import RouteTable, Upstream
from nonstop.drivers.router.haproxy import HAProxyRouter
from nonstop.drivers.router.settings import RouterSettings
from nonstop.errors import UsageError
from nonstop.fleet.plan import HostView, ReleaseCounts

NO_RELEASE = "-"
KEEP_SAMPLES = 200_000


def edge_on_host_problem(on: str) -> str:
    """Why the edge does not run on a fleet host (decision 0541), and what does."""
    return (
        f'fleet.front.on: the edge router runs on the controller machine only, not on host "{on}": '
        "the controller applies its weights through HAProxy's admin socket and reads its request "
        "stream, which the fleet-wide analysis needs, in the same instant it decides; over SSH "
        "both would stop with the host's link. Supported layouts: "
        '[fleet.front] kind = "edge", on = "controller" (this machine serves the users\' '
        'address), or kind = "external" (a load balancer anywhere, even on that host, checking '
        "each host's front health path; docs/fleet.md)"
    )


class Edge:
    def __init__(
        self, state_dir: Path, fleet: FleetConfig, drain_timeout: float, *, pins: bool = False
    ) -> None:
        if fleet.front.kind != "edge" or fleet.front.on != "controller":
            raise UsageError(edge_on_host_problem(fleet.front.on))
        settings = RouterSettings(
            listen=fleet.front.listen,
            drain_timeout=drain_timeout,
            release_stamp=True,  # the client's header is dropped even when nothing is pinned
            health_path=fleet.front.health_path if pins else None,
        )
        self.pins = pins
        self.router = HAProxyRouter(state_dir, settings)
        self._charged = self.pinned()
        """The pin as this process last set or read it: what each request is charged to."""
        self.port = fleet.router_port
        self.hosts = {f"{h.address}:{fleet.router_port}": h.name for h in fleet.web_hosts}
        self.releases: dict[str, str | None] = {}
        self.samples: deque[tuple[float, str, bool]] = deque(maxlen=KEEP_SAMPLES)
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start (or adopt) the edge's HAProxy and read its requests. An edge that does not pin
        drops a pin left from when it did: a later edge switch starts from no stamp, not from
        a release the hosts may no longer run."""
        await self.router.start()
        if not self.pins:
            await self.router.set_release(None)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.router.close()

    async def _read(self) -> None:
        async for event in self.router.events():
            host = self.hosts.get(event.upstream or "")
            release = self._charged or (self.releases.get(host) if host else None)
            error = event.status >= 500 or event.proxy_error
            self.samples.append((event.ts, release or NO_RELEASE, error))

    def pinned(self) -> str | None:
        """The release stamped on every request (None: none, each host's table decides), as
        the edge's saved state says (the stamp a restarted edge would apply)."""
        return self.router.stamped_release() if self.pins else None

    async def pin(self, release: str | None) -> None:
        """Stamp ``release`` on every request from now on: one runtime-API command, durable
        (a restarted edge stamps it too). Asked of an edge that does not pin: nothing to do
        for None, a UsageError otherwise."""
        if not self.pins:
            if release is None:
                return
            raise UsageError(
                f'the edge cannot pin {release}: fleet.front.switch is not "edge" (docs/fleet.md)'
            )
        await self.router.set_release(release)
        self._charged = release

    def note_releases(self, releases: Mapping[str, str | None]) -> None:
        self.releases.update(releases)

    def counts_since(self, since: float) -> dict[str, ReleaseCounts]:
        totals: dict[str, list[int]] = {}
        for ts, release, error in self.samples:
            if ts >= since:
                pair = totals.setdefault(release, [0, 0])
                pair[0] += 1
                pair[1] += int(error)
        return {release: ReleaseCounts(n, e) for release, (n, e) in totals.items()}

    async def apply(self, enabled: tuple[str, ...], views: Mapping[str, HostView]) -> None:
        upstreams = []
        for address, name in self.hosts.items():
            view = views.get(name)
            release = (view.active if view else None) or NO_RELEASE
            weight = 1 if name in enabled else 0
            upstreams.append(Upstream(name, release, address, weight))
        await self.router.apply(RouteTable(tuple(upstreams)))
