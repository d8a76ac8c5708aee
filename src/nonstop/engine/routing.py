"""From release weights to router upstream weights (pure)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from nonstop.drivers.router.base import RouteTable, Upstream
from nonstop.drivers.runtime.base import InstanceHandle


def route_table(weights: Mapping[str, int] | None, ready: Sequence[InstanceHandle]) -> RouteTable:
    """Ready instances with weights: each release's percent split evenly over its ready
    instances, in the smallest integers that keep the ratios exact (``None``: all equal).

    Small integers matter: Caddy's weighted round robin serves ``weight / gcd`` requests in a
    row to one upstream. Worked example, v1 50% on 3 instances and v2 50% on 2: shares 50/3
    and 50/2 become 100 and 150 (x lcm(3, 2) = 6), then 2 and 3 (/ gcd 50), so no upstream
    gets more than 3 requests in a row and the split stays exactly 50/50. A release with a
    share but no ready instance gets nothing: its share goes to the others (invariant 1)."""
    if weights is None:
        raw = [(h, 1) for h in ready]
    else:
        peers = Counter(h.release for h in ready)
        shares = {release: weights.get(release, 0) for release in peers}
        scale = math.lcm(*(peers[r] for r in peers if shares[r] > 0)) or 1
        raw = [(h, shares[h.release] * scale // peers[h.release]) for h in ready]
    divisor = math.gcd(*(w for _, w in raw if w > 0)) or 1
    upstreams = [
        Upstream(h.instance_id, h.release, h.address, w // divisor) for h, w in raw if w > 0
    ]
    return RouteTable(tuple(sorted(upstreams, key=lambda u: u.instance_id)))


def release_slots(
    active: str | None, candidate: str | None, ready: Sequence[InstanceHandle]
) -> dict[str, tuple[str, ...]]:
    """The releases a router may serve by name (``X-Nonstop-Release``, decision 0581), in
    priority order, each with the sorted addresses of its ready web instances.

    First the active release, then the rollout's candidate, then any other release with a
    ready instance (the previous one kept warm), the one whose newest instance started last
    first. A release with nothing ready is left out, so an instance that drains or stops
    is in no slot (invariant 2: it leaves its slot before it is stopped). Worked example,
    v2 active, v3 the candidate with one of its two instances ready, v1 kept warm::

        release_slots("v2", "v3", [v1-1 :9001, v2-1 :9003, v2-2 :9002, v3-1 :9005])
        -> {"v2": (":9002", ":9003"), "v3": (":9005",), "v1": (":9001",)}

    The router holds two slots, so v1 has none while v3 has a ready instance (the driver
    skips a release with no address); v1 is not kept past this rollout anyway."""
    addresses: dict[str, list[str]] = {}
    newest: dict[str, float] = {}
    for handle in ready:
        addresses.setdefault(handle.release, []).append(handle.address)
        newest[handle.release] = max(newest.get(handle.release, 0.0), handle.started_at)
    first = [r for r in dict.fromkeys((active, candidate)) if r is not None and r in addresses]
    others = sorted((r for r in addresses if r not in first), key=lambda r: (-newest[r], r))
    return {release: tuple(sorted(addresses[release])) for release in (*first, *others)}
