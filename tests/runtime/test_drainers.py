"""The drainer registry from tables: deadlines and remaining work per role kind."""

from __future__ import annotations

import pytest

from nonstop.drivers.runtime.drainers import DRAINERS, drainer_for

A, B = "127.0.0.1:9001", "127.0.0.1:9002"


@pytest.mark.parametrize(
    ("routed", "in_flight", "table", "busy"),
    [
        (True, {A: 3}, set(), 3),  # requests still in flight
        (True, {}, {A}, 1),  # the router's accepted table still has it: busy by definition
        (True, {A: 2}, {A}, 3),
        (True, {B: 5}, {B}, 0),  # another instance's traffic is not ours
        (False, {A: 4}, {A}, 0),  # a worker has no connections to wait for
    ],
)
def test_busy(routed: bool, in_flight: dict[str, int], table: set[str], busy: int) -> None:
    assert drainer_for(routed).busy(A, in_flight, table) == busy


@pytest.mark.parametrize(
    ("routed", "deadline", "quiets"),
    [(True, 130.0, False), (False, 100.0, True)],  # now 100, drain_timeout 30
)
def test_deadline_and_quiet_step(routed: bool, deadline: float, quiets: bool) -> None:
    drainer = drainer_for(routed)
    assert (drainer.deadline(100.0, 30.0), drainer.quiets) == (deadline, quiets)


def test_registry_names() -> None:
    assert sorted(DRAINERS) == ["connections", "quiet"]
