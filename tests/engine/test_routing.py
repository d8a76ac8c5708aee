"""Release weights -> upstream weights, from a table of worked examples."""

from __future__ import annotations

import pytest

from nonstop.drivers.runtime.base import InstanceHandle
from nonstop.engine.routing import release_slots, route_table


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


def handle(instance_id: str, port: int, started_at: float = 0.0) -> InstanceHandle:
    release = instance_id.split("-")[0]
    return InstanceHandle(instance_id, release, "127.0.0.1", port, started_at=started_at)


V1_1, V1_2 = handle("v1-1", 9001, 10.0), handle("v1-2", 9002, 11.0)
V2_1, V2_2 = handle("v2-1", 9004, 20.0), handle("v2-2", 9003, 21.0)
V3_1 = handle("v3-1", 9005, 30.0)
V0_1 = handle("v0-1", 9000, 5.0)

SLOT_CASES = [
    # (active, candidate, ready instances, expected slots in priority order)
    # one release serving, nothing else: its slot only
    ("v1", None, [V1_2, V1_1], [("v1", ("127.0.0.1:9001", "127.0.0.1:9002"))]),
    # blue-green held: v2 ready at weight 0 (not in the table) still has its slot
    (
        "v1",
        "v2",
        [V2_1, V1_1, V2_2, V1_2],
        [
            ("v1", ("127.0.0.1:9001", "127.0.0.1:9002")),
            ("v2", ("127.0.0.1:9003", "127.0.0.1:9004")),
        ],
    ),
    # v2 promoted, v1 kept warm (no rollout): the active one first, then the warm one
    ("v2", None, [V1_1, V2_1], [("v2", ("127.0.0.1:9004",)), ("v1", ("127.0.0.1:9001",))]),
    # a rollback runs v1 as the candidate while v2 is still the active release
    ("v2", "v1", [V1_1, V2_1], [("v2", ("127.0.0.1:9004",)), ("v1", ("127.0.0.1:9001",))]),
    # v2 active, v3 rolling out, v1 still warm: v1 ranks third (the router's two slots are
    # v2 and v3); the candidate outranks it whatever their start times
    (
        "v2",
        "v3",
        [V1_1, V3_1, V2_1],
        [
            ("v2", ("127.0.0.1:9004",)),
            ("v3", ("127.0.0.1:9005",)),
            ("v1", ("127.0.0.1:9001",)),
        ],
    ),
    # the candidate has nothing ready yet: left out, so the warm v1 ranks second
    ("v2", "v3", [V1_1, V2_1], [("v2", ("127.0.0.1:9004",)), ("v1", ("127.0.0.1:9001",))]),
    # two others: the one whose newest instance started last first (v1 at 11 > v0 at 5)
    (
        "v2",
        None,
        [V0_1, V1_1, V2_1, V1_2],
        [
            ("v2", ("127.0.0.1:9004",)),
            ("v1", ("127.0.0.1:9001", "127.0.0.1:9002")),
            ("v0", ("127.0.0.1:9000",)),
        ],
    ),
    # v1 draining (not ready): out of every slot although it is the active release
    ("v1", "v2", [V2_1], [("v2", ("127.0.0.1:9004",))]),
    # a first deploy: no active release yet
    (None, "v1", [V1_1], [("v1", ("127.0.0.1:9001",))]),
    # the active release is also the candidate (a re-deploy is refused, but never twice)
    ("v1", "v1", [V1_1], [("v1", ("127.0.0.1:9001",))]),
    (None, None, [], []),
]


@pytest.mark.parametrize(("active", "candidate", "ready", "expected"), SLOT_CASES)
def test_release_slots(
    active: str | None,
    candidate: str | None,
    ready: list[InstanceHandle],
    expected: list[tuple[str, tuple[str, ...]]],
) -> None:
    assert list(release_slots(active, candidate, ready).items()) == expected
