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
