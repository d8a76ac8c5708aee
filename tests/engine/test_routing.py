"""Release weights -> upstream weights, from a table of worked examples."""

from __future__ import annotations

import pytest

from nonstop.drivers.runtime.base import InstanceHandle
from nonstop.engine.routing import route_table


def instances(**counts: int) -> list[InstanceHandle]:
    handles, port = [], 9000
    for release, n in counts.items():
        for i in range(1, n + 1):
            port += 1
            handles.append(InstanceHandle(f"{release}-{i}", release, "127.0.0.1", port))
    return handles


CASES = [
    # (weights, ready instances, expected weight per instance id)
    ({"v1": 100}, {"v1": 2}, {"v1-1": 1, "v1-2": 1}),
    ({"v1": 100}, {"v1": 2, "v2": 2}, {"v1-1": 1, "v1-2": 1}),  # v2 ready, no traffic yet
    # 50/50 over 3 + 2 instances: 50/3 and 50/2 -> x6 -> 100, 150 -> /50 -> 2, 3
    (
        {"v1": 50, "v2": 50},
        {"v1": 3, "v2": 2},
        {"v1-1": 2, "v1-2": 2, "v1-3": 2, "v2-1": 3, "v2-2": 3},
    ),
    # 95/5 with one canary: 95/2 and 5/1 -> x2 -> 95, 10 -> /5 -> 19, 2
    ({"v1": 95, "v2": 5}, {"v1": 2, "v2": 1}, {"v1-1": 19, "v1-2": 19, "v2-1": 2}),
    # a release with a share but nothing ready: the others take all (invariant 1)
    ({"v1": 90, "v2": 10}, {"v1": 2}, {"v1-1": 1, "v1-2": 1}),
    # None: every ready instance of every release equally (no release favoured)
    (None, {"v1": 2, "v2": 1}, {"v1-1": 1, "v1-2": 1, "v2-1": 1}),
    ({"v1": 100}, {}, {}),
]


@pytest.mark.parametrize(("weights", "ready", "expected"), CASES)
def test_route_table(
    weights: dict[str, int] | None, ready: dict[str, int], expected: dict[str, int]
) -> None:
    table = route_table(weights, instances(**ready))
    assert {u.instance_id: u.weight for u in table.upstreams} == expected


@pytest.mark.parametrize("canary", [1, 5, 25, 50])
@pytest.mark.parametrize(("stable_n", "canary_n"), [(2, 1), (3, 2), (5, 3), (10, 1)])
def test_shares_are_exact(canary: int, stable_n: int, canary_n: int) -> None:
    table = route_table({"v1": 100 - canary, "v2": canary}, instances(v1=stable_n, v2=canary_n))
    total = sum(u.weight for u in table.upstreams)
    assert table.weight_of("v2") * 100 == canary * total
