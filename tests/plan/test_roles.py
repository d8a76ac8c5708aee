"""Non-web roles (plan/roles.py), from tables of worked examples: which release leads the
workers, how many each release runs at each step, and how a candidate whose workers are not
ready holds every strategy back."""

from __future__ import annotations

import doctest
import importlib
from typing import Any

import pytest

from nonstop.config.load import validate_config
from nonstop.plan import bluegreen, rolling
from nonstop.plan.model import (
    InstanceView,
    Observed,
    RolloutSpec,
    RolloutState,
    RunSmoke,
    ScaleRelease,
    waiting_for,
)
from nonstop.plan.roles import (
    RoleBudget,
    RoleCount,
    RolloutView,
    leading_release,
    pending,
    role_targets,
)

BG = RolloutView("bluegreen", "v2", "v1", "starting")
ROLL = RolloutView("rolling", "v2", "v1", "rolling")
CANARY = RolloutView("canary", "v2", "v1", "analysing")


@pytest.mark.parametrize(
    ("rollout", "active", "desired", "weights", "leader"),
    [
        # no rollout: the active release runs the workers; nothing deployed: nobody
        (None, "v1", {"v1": 2}, {"v1": 100}, "v1"),
        (None, None, {}, None, None),
        # first deploy: the candidate from the start
        (RolloutView("bluegreen", "v1", None, "starting"), None, {}, None, "v1"),
        # blue-green and rolling: the candidate from the start, while it is wanted
        (BG, "v1", {"v1": 2, "v2": 2}, {"v1": 100}, "v2"),
        (ROLL, "v1", {"v1": 2, "v2": 1}, None, "v2"),
        # given up: the candidate scaled to 0, or rolling back -> the stable release again
        (BG, "v1", {"v1": 2}, {"v1": 100}, "v1"),
        (RolloutView("rolling", "v2", "v1", "rolling_back"), "v1", {"v1": 2, "v2": 2}, None, "v1"),
        # canary: the workers follow the web role's promotion
        (CANARY, "v1", {"v1": 2, "v2": 1}, {"v1": 90, "v2": 10}, "v1"),
        (CANARY, "v1", {"v1": 2, "v2": 2}, {"v1": 0, "v2": 100}, "v2"),
        # a rollback is a blue-green rollout onto the previous release
        (RolloutView("bluegreen", "v1", "v2", "starting"), "v2", {"v1": 2, "v2": 2}, None, "v1"),
    ],
)
def test_leading_release(
    rollout: RolloutView | None,
    active: str | None,
    desired: dict[str, int],
    weights: dict[str, int] | None,
    leader: str | None,
) -> None:
    assert leading_release(rollout, active, desired, weights) == leader


ALL_2 = RoleBudget(2)
ROLL_4 = RoleBudget.rolling(4, "1", "0")  # at most 5, at least 4 ready
ROLL_4_UNAVAILABLE = RoleBudget.rolling(4, "0", "1")  # at most 4, at least 3 ready


@pytest.mark.parametrize(
    ("budget", "counts", "targets"),
    [
        # blue-green: start every new one, keep the old until all new are ready, then none
        (ALL_2, {"v1": RoleCount(2, 2)}, {"v2": 2, "v1": 2}),
        (ALL_2, {"v2": RoleCount(2, 1), "v1": RoleCount(2, 2)}, {"v2": 2, "v1": 2}),
        (ALL_2, {"v2": RoleCount(2, 2), "v1": RoleCount(2, 2)}, {"v2": 2}),
        # first deploy: nothing old
        (ALL_2, {}, {"v2": 2}),
        # rolling, surge 1: one new at a time, an old one leaves per new one ready
        (ROLL_4, {"v1": RoleCount(4, 4)}, {"v2": 1, "v1": 4}),
        (ROLL_4, {"v2": RoleCount(1, 1), "v1": RoleCount(4, 4)}, {"v2": 1, "v1": 3}),
        (ROLL_4, {"v2": RoleCount(1, 1), "v1": RoleCount(3, 3)}, {"v2": 2, "v1": 3}),
        (ROLL_4, {"v2": RoleCount(2, 1), "v1": RoleCount(3, 3)}, {"v2": 2, "v1": 3}),
        (ROLL_4, {"v2": RoleCount(4, 4), "v1": RoleCount(1, 1)}, {"v2": 4}),
        # rolling, unavailable 1, no surge: an old one leaves first, a new one takes its place
        (ROLL_4_UNAVAILABLE, {"v1": RoleCount(4, 4)}, {"v2": 0, "v1": 3}),
        (ROLL_4_UNAVAILABLE, {"v1": RoleCount(3, 3)}, {"v2": 1, "v1": 3}),
        (ROLL_4_UNAVAILABLE, {"v2": RoleCount(1, 1), "v1": RoleCount(3, 3)}, {"v2": 1, "v1": 2}),
        # two old releases: the newest keeps its instances first
        (ALL_2, {"v3": RoleCount(1, 1), "v1": RoleCount(1, 1)}, {"v2": 2, "v3": 1, "v1": 1}),
    ],
)
def test_role_targets(
    budget: RoleBudget, counts: dict[str, RoleCount], targets: dict[str, int]
) -> None:
    assert role_targets("v2", budget, counts) == targets


def test_no_leader_runs_nothing() -> None:
    assert role_targets(None, ALL_2, {"v1": RoleCount(2, 2)}) == {}


def test_rolling_budget_never_exceeds_surge_nor_unavailable() -> None:
    """Simulate a rolling move of 5 workers (surge 2, unavailable 1), starting and stopping
    exactly what the targets say, new ones ready one step after they start."""
    budget = RoleBudget.rolling(5, "2", "1")
    old, new_ready, new_starting = 5, 0, 0
    for _ in range(20):
        targets = role_targets(
            "v2",
            budget,
            {
                "v2": RoleCount(new_ready + new_starting, new_ready),
                "v1": RoleCount(old, old),
            },
        )
        new_ready += new_starting
        new_starting = targets["v2"] - new_ready
        old = targets.get("v1", 0)
        assert old + new_ready + new_starting <= 7
        assert old + new_ready >= 4
    assert (old, new_ready) == (0, 5)


def config(**extra: Any) -> Any:
    return validate_config(
        {
            "app": {"name": "shop", "command": "app --port {port}", "replicas": 2},
            "processes": {"worker": {"command": "rq worker", "replicas": 2}},
            **extra,
        }
    )


def web(release: str, n: int) -> tuple[InstanceView, ...]:
    return tuple(InstanceView(f"{release}-{i}", release, ready=True) for i in range(1, n + 1))


def test_pending_workers_hold_blue_green_in_starting() -> None:
    spec = RolloutSpec("bluegreen", "v2", "v1", config())
    state = RolloutState("starting", 0.0)
    views = web("v1", 2) + web("v2", 2) + (InstanceView("v2:worker-1", "v2", True, role="worker"),)
    waiting = Observed(1.0, views, pending={"v2": "worker has 1/2 ready"})
    decision = bluegreen.decide(spec, state, waiting)
    assert decision.state.phase == "starting"
    assert not any(isinstance(a, RunSmoke) for a in decision.actions)
    assert waiting_for(waiting, "v2", 2) == "v2 has 0/2 ready; waiting for its worker has 1/2 ready"
    ready = Observed(2.0, views)
    assert bluegreen.decide(spec, state, ready).state.phase == "watching"  # no smoke set


def test_a_failed_worker_aborts_the_rollout() -> None:
    spec = RolloutSpec("bluegreen", "v2", "v1", config())
    state = RolloutState("starting", 0.0)
    broken = InstanceView("v2:worker-1", "v2", False, failed="exited with code 1", role="worker")
    decision = bluegreen.decide(spec, state, Observed(1.0, web("v1", 2) + web("v2", 2) + (broken,)))
    assert decision.finished is not None
    assert "v2:worker-1" in decision.finished.reason


def test_workers_are_not_web_capacity_for_rolling() -> None:
    """Worker views of either release neither count as serving web instances nor as failed
    old capacity: the web roll moves exactly as without them."""
    spec = RolloutSpec("rolling", "v2", "v1", config(strategy={"kind": "rolling"}))
    state = rolling.initial_state(spec, 0.0)
    workers = tuple(
        InstanceView(f"v1:worker-{i}", "v1", False, failed="gone", role="worker", draining=True)
        for i in (1, 2)
    )
    plain = rolling.decide(spec, state, Observed(1.0, web("v1", 2)))
    with_workers = rolling.decide(spec, state, Observed(1.0, web("v1", 2) + workers))
    assert plain.actions == with_workers.actions
    assert ScaleRelease("v2", 1) in plain.actions


def test_pending_lists_every_role_that_misses_instances() -> None:
    budgets = {"worker": RoleBudget(2), "beat": RoleBudget(1)}
    assert pending(budgets, {}) == "beat has 0/1 ready, worker has 0/2 ready"


@pytest.mark.parametrize(
    "module",
    [
        "nonstop.plan.roles",
        "nonstop.engine.roles",
        "nonstop.engine.instances",
        "nonstop.drivers.runtime.procfs",
        "nonstop.cli.progress",
    ],
)
def test_worked_examples_in_docstrings_hold(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted >= 1
    assert result.failed == 0
