"""Rolling-update planner: a table of (budget, state, observation) -> actions and next phase, then
a simulation that steps the planner against a fake world and pins invariant 3 at every step."""

from __future__ import annotations

import doctest
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonstop.analysis.measurement import Measurement
from nonstop.config.load import validate_config
from nonstop.config.schema import NonstopConfig
from nonstop.plan import rolling
from nonstop.plan.model import (
    Action,
    Command,
    Finish,
    InstanceView,
    Observed,
    RolloutSpec,
    RolloutState,
    ScaleRelease,
    SetWeights,
)

T0 = 1_000.0
ONLY_V1 = SetWeights({"v1": 100})
ONLY_V2 = SetWeights({"v2": 100})


def W(old: int, new: int) -> SetWeights:
    """An equal share per ready instance, as percentages of v1 and v2."""
    return SetWeights({"v1": old, "v2": new})


def config(
    replicas: int = 5,
    surge: int | str = 1,
    unavailable: int | str = 0,
    *,
    min_ready: float = 0,
    deadline: float = 600,
    watch: float = 60,
) -> NonstopConfig:
    rolling_cfg = {
        "max_surge": surge,
        "max_unavailable": unavailable,
        "min_ready": min_ready,
        "progress_deadline": deadline,
    }
    return validate_config(
        {
            "app": {"name": "shop", "command": "app --port {port}", "replicas": replicas},
            "strategy": {"kind": "rolling", "rolling": rolling_cfg},
            "watch": {"duration": watch, "max_error_rate": 0.02, "min_requests": 50},
        }
    )


def up(
    release: str,
    n: int,
    *,
    ready: bool = True,
    since: float = T0 - 100,
    draining: bool = False,
    failed: str | None = None,
    first: int = 1,
) -> tuple[InstanceView, ...]:
    return tuple(
        InstanceView(
            f"{release}-{i}",
            release,
            ready=ready and failed is None,
            draining=draining,
            ready_since=since if ready and failed is None else None,
            failed=failed,
        )
        for i in range(first, first + n)
    )


def measured(release: str, requests: int, errors: int) -> dict[str, Measurement]:
    status = {"2xx": requests - errors, "5xx": errors}
    return {release: Measurement(release, T0, T0 + 10, requests, status)}


def progress(old: int, new: int, mark: list[int] | None = None, at: float = T0) -> dict[str, Any]:
    return {"old": old, "new": new, "progress_at": at, "mark": mark}


def persisted(state: RolloutState) -> RolloutState:
    """``state`` after a trip through JSON, as the engine stores it."""
    return RolloutState.from_dict(json.loads(json.dumps(state.to_dict())))


@dataclass
class Case:
    name: str
    observed: Observed
    actions: list[Action]
    next_phase: str
    phase: str = "rolling"
    data: dict[str, Any] = field(default_factory=dict)
    config: NonstopConfig = field(default_factory=config)
    stable: str | None = "v1"
    paused: bool = False
    next_data: dict[str, Any] = field(default_factory=dict)
    event: str = ""
    """A fragment one of the decision's events must contain."""


CASES = [
    Case(
        "5 replicas, surge 1, unavailable 0: start exactly one new (6 running)",
        Observed(T0, up("v1", 5)),
        [ONLY_V1, ScaleRelease("v2", 1), ScaleRelease("v1", 5)],
        "rolling",
        next_data={"old": 5, "new": 1},
        event="at most 6 instances, at least 5 available",
    ),
    Case(
        "the new one is not ready yet: nothing old may go (5 available, 5 needed)",
        Observed(T0, up("v1", 5) + up("v2", 1, ready=False)),
        [ONLY_V1, ScaleRelease("v2", 1), ScaleRelease("v1", 5)],
        "rolling",
        data=progress(5, 1),
    ),
    Case(
        "the new one is ready: slack 5 + 1 - 5 = 1, drain one old",
        Observed(T0, up("v1", 5) + up("v2", 1)),
        [W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 4)],
        "rolling",
        data=progress(5, 1),
        event="draining 1 v1 (4 left)",
    ),
    Case(
        "the old one is still draining: it counts toward the 6, so nothing starts",
        Observed(T0, up("v1", 4) + up("v1", 1, draining=True, first=5) + up("v2", 1)),
        [W(80, 20), ScaleRelease("v2", 1), ScaleRelease("v1", 4)],
        "rolling",
        data=progress(4, 1),
    ),
    Case(
        "drained: start the next new one",
        Observed(T0, up("v1", 4) + up("v2", 1)),
        [W(80, 20), ScaleRelease("v2", 2), ScaleRelease("v1", 4)],
        "rolling",
        data=progress(4, 1),
    ),
    Case(
        "engine lag: v1 target is 4 but 5 still serve; the one leaving is counted as gone",
        Observed(T0, up("v1", 5) + up("v2", 1)),
        [W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 4)],
        "rolling",
        data=progress(4, 1),
    ),
    Case(
        "10 replicas, 25%/25%: surge rounds up to 3, unavailable down to 2 -> new 3, old 8",
        Observed(T0, up("v1", 10)),
        [ONLY_V1, ScaleRelease("v2", 3), ScaleRelease("v1", 8)],
        "rolling",
        config=config(10, "25%", "25%"),
        event="at most 13 instances, at least 8 available",
    ),
    Case(
        "surge 0, unavailable 1: first an old one goes, nothing may start",
        Observed(T0, up("v1", 4)),
        [ONLY_V1, ScaleRelease("v2", 0), ScaleRelease("v1", 3)],
        "rolling",
        config=config(4, 0, 1),
    ),
    Case(
        "surge 0 and unavailable 0 would never move: surge 1, and an event says so",
        Observed(T0, up("v1", 3)),
        [ONLY_V1, ScaleRelease("v2", 1), ScaleRelease("v1", 3)],
        "rolling",
        config=config(3, 0, 0),
        event="max_surge 0 and max_unavailable 0 are both 0 for 3 replicas; using max_surge 1",
    ),
    Case(
        "min_ready 10s: ready for only 4s is not yet available, the old stay",
        Observed(T0, up("v1", 5) + up("v2", 1, since=T0 - 4)),
        [W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 5)],
        "rolling",
        data=progress(5, 1),
        config=config(min_ready=10),
    ),
    Case(
        "min_ready 10s: ready for 10s counts",
        Observed(T0, up("v1", 5) + up("v2", 1, since=T0 - 10)),
        [W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 4)],
        "rolling",
        data=progress(5, 1),
        config=config(min_ready=10),
    ),
    Case(
        "an old instance crashed: it holds no capacity, so one more new may start",
        Observed(T0, up("v1", 4) + up("v1", 1, failed="exited 1", first=5) + up("v2", 1)),
        [W(80, 20), ScaleRelease("v2", 2), ScaleRelease("v1", 5)],
        "rolling",
        data=progress(5, 1),
    ),
    Case(
        "all new available and the old at 0: the watch starts",
        Observed(T0, up("v2", 5)),
        [ONLY_V2, ScaleRelease("v2", 5), ScaleRelease("v1", 0)],
        "watching",
        data=progress(1, 5),
        event="watching v2 for 60s",
    ),
    Case(
        "all new available while 1 old has not left yet (no watch): done, weights {v2: 100}",
        Observed(T0, up("v1", 1) + up("v2", 3)),
        [
            ONLY_V2,
            ScaleRelease("v2", 3),
            ScaleRelease("v1", 0),
            Finish("completed", "v2 serves all traffic"),
        ],
        "completed",
        data=progress(0, 3),
        config=config(3, watch=0),
    ),
    Case(
        "watch: a new instance crash-loops: roll back at once",
        Observed(T0 + 5, up("v2", 4) + up("v2", 1, failed="crash-looping: 3 restarts", first=5)),
        [ONLY_V2, ScaleRelease("v1", 5)],
        "rolling_back",
        phase="watching",
        next_data={"reason": "watch: v2-5 crash-looping: 3 restarts"},
    ),
    Case(
        "watch over with no request for v2 while the service answered 300: roll back",
        Observed(T0 + 61, up("v2", 5), traffic=300),
        [ONLY_V2, ScaleRelease("v1", 5)],
        "rolling_back",
        phase="watching",
        next_data={
            "reason": "watch: no request reached v2 while the service answered 300; "
            "it is not serving"
        },
    ),
    Case(
        "a new instance failed: roll back, v1 back to 5 before anything stops",
        Observed(T0, up("v1", 4) + up("v2", 1, failed="exited with code 3")),
        [ONLY_V1, ScaleRelease("v1", 5)],
        "rolling_back",
        data=progress(4, 1),
        next_data={"reason": "v2-1 did not become ready: exited with code 3"},
    ),
    Case(
        "no progress for 601s > progress_deadline 600s: roll back with the numbers",
        Observed(T0 + 601, up("v1", 5) + up("v2", 1, ready=False)),
        [ONLY_V1, ScaleRelease("v1", 5)],
        "rolling_back",
        data=progress(5, 1, mark=[5, 1, 0]),
        next_data={
            "reason": "rolling: no progress for 601s (progress_deadline 600s): v2 has 0/5 "
            "available, 5 not ready"
        },
    ),
    Case(
        "exactly at the deadline is still in time",
        Observed(T0 + 600, up("v1", 5) + up("v2", 1, ready=False)),
        [ONLY_V1, ScaleRelease("v2", 1), ScaleRelease("v1", 5)],
        "rolling",
        data=progress(5, 1, mark=[5, 1, 0]),
    ),
    Case(
        "paused: the targets hold although the new one is ready",
        Observed(T0, up("v1", 5) + up("v2", 1)),
        [W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 5)],
        "rolling",
        data=progress(5, 1),
        paused=True,
    ),
    Case(
        "paused for an hour is not a stalled rollout",
        Observed(T0 + 3600, up("v1", 5) + up("v2", 1)),
        [W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 5)],
        "rolling",
        data=progress(5, 1, mark=[5, 1, 1]),
        paused=True,
        next_data={"progress_at": T0 + 3600},
    ),
    Case(
        "pause command: holds from this call on",
        Observed(T0, up("v1", 5) + up("v2", 1), command="pause"),
        [W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 5)],
        "rolling",
        data=progress(5, 1),
        event="paused by operator",
    ),
    Case(
        "resume command: moves again at once",
        Observed(T0, up("v1", 5) + up("v2", 1), command="resume"),
        [W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 4)],
        "rolling",
        data=progress(5, 1),
        paused=True,
        event="resumed by operator",
    ),
    Case(
        "promote has no meaning here: ignored with an event, the rollout carries on",
        Observed(T0, up("v1", 5) + up("v2", 1), command="promote"),
        [W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 4)],
        "rolling",
        data=progress(5, 1),
        event="promote ignored: a rolling update has no steps to promote",
    ),
    Case(
        "resume while not paused is ignored with an event",
        Observed(T0, up("v1", 5), command="resume"),
        [ONLY_V1, ScaleRelease("v2", 1), ScaleRelease("v1", 5)],
        "rolling",
        event="resume ignored: not paused",
    ),
    Case(
        "operator abort mid-way: v1 back to 5 first",
        Observed(T0, up("v1", 3) + up("v2", 2), command="abort"),
        [W(60, 40), ScaleRelease("v1", 5)],
        "rolling_back",
        data=progress(3, 2),
        next_data={"reason": "abort requested by operator"},
    ),
    Case(
        "rolling back, v1 3/5 ready: v2 keeps serving meanwhile",
        Observed(T0, up("v1", 3) + up("v1", 2, ready=False, first=4) + up("v2", 2)),
        [W(60, 40), ScaleRelease("v1", 5)],
        "rolling_back",
        phase="rolling_back",
        data={"reason": "abort requested by operator"},
    ),
    Case(
        "rolling back, v1 5/5 ready: traffic to v1 first, then v2 drains",
        Observed(T0, up("v1", 5) + up("v2", 2)),
        [
            ScaleRelease("v1", 5),
            SetWeights({"v1": 100}),
            ScaleRelease("v2", 0),
            Finish("rolled_back", "abort requested by operator"),
        ],
        "rolled_back",
        phase="rolling_back",
        data={"reason": "abort requested by operator"},
    ),
    Case(
        "rolling back, v1 cannot come back: both keep serving, aborted with both reasons",
        Observed(T0, up("v1", 4) + up("v1", 1, failed="exited 1", first=5) + up("v2", 2)),
        [
            W(67, 33),
            Finish(
                "aborted",
                "no progress for 601s; could not restore v1: v1-5 did not become ready: "
                "exited 1; v2 keeps serving",
            ),
        ],
        "aborted",
        phase="rolling_back",
        data={"reason": "no progress for 601s"},
    ),
    Case(
        "abort while already rolling back is ignored with an event",
        Observed(T0, up("v1", 4) + up("v2", 2), command="abort"),
        [W(67, 33), ScaleRelease("v1", 5)],
        "rolling_back",
        phase="rolling_back",
        data={"reason": "no progress for 601s"},
        event="abort ignored: already rolling back",
    ),
    Case(
        "watch: 40 requests are below min_requests 50, no verdict yet",
        Observed(T0 + 10, up("v2", 5), measurements=measured("v2", 40, 2)),
        [],
        "watching",
        phase="watching",
    ),
    Case(
        "watch: 12/500 = 2.4% > 2%: start v1 again (nothing switches before it is ready)",
        Observed(T0 + 10, up("v2", 5), measurements=measured("v2", 500, 12)),
        [ONLY_V2, ScaleRelease("v1", 5)],
        "rolling_back",
        phase="watching",
        next_data={
            "reason": "watch: error_rate 0.024 > max 0.02 over 500 requests "
            "(promoted v2, 00:16:40-00:16:50)"
        },
    ),
    Case(
        "watch over at 1% errors: completed",
        Observed(T0 + 61, up("v2", 5), measurements=measured("v2", 1000, 10)),
        [Finish("completed", "v2 serves all traffic (10/1000 errors during the watch)")],
        "completed",
        phase="watching",
    ),
    Case(
        "pause during the watch is ignored with an event",
        Observed(T0 + 10, up("v2", 5), command="pause"),
        [],
        "watching",
        phase="watching",
        event="pause ignored: the watch only judges",
    ),
    Case(
        "first deploy: nothing old, so all 5 start at once (surge is about extra instances)",
        Observed(T0),
        [ONLY_V2, ScaleRelease("v2", 5)],
        "rolling",
        stable=None,
    ),
    Case(
        "first deploy, all available: completed without a watch (nothing to go back to)",
        Observed(T0, up("v2", 5)),
        [ONLY_V2, ScaleRelease("v2", 5), Finish("completed", "v2 serves all traffic")],
        "completed",
        data=progress(0, 5),
        stable=None,
    ),
    Case(
        "first deploy, an instance failed: stop what started, aborted",
        Observed(T0, up("v2", 4) + up("v2", 1, failed="port in use", first=5)),
        [ScaleRelease("v2", 0), Finish("aborted", "v2-5 did not become ready: port in use")],
        "aborted",
        data=progress(0, 5),
        stable=None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rolling_table(case: Case) -> None:
    spec = RolloutSpec("rolling", "v2", case.stable, case.config)
    state = RolloutState(case.phase, phase_started_at=T0, paused=case.paused, data=case.data)
    decision = rolling.decide(spec, state, case.observed)
    assert list(decision.actions) == case.actions
    assert decision.state.phase == case.next_phase
    assert {k: decision.state.data.get(k) for k in case.next_data} == case.next_data
    if case.event:
        assert any(case.event in e for e in decision.events), decision.events


def test_unknown_phase_is_a_programming_error() -> None:
    spec = RolloutSpec("rolling", "v2", "v1", config())
    with pytest.raises(ValueError, match="no phase 'sideways'"):
        rolling.decide(spec, RolloutState("sideways", T0), Observed(now=T0))


def test_decide_is_idempotent_for_the_same_observation() -> None:
    """Replaying a decision after a crash never moves a target twice (invariant 4)."""
    spec = RolloutSpec("rolling", "v2", "v1", config())
    observed = Observed(T0, up("v1", 5) + up("v2", 1))
    state = RolloutState("rolling", T0, data=progress(5, 1))
    first = rolling.decide(spec, state, observed)
    second = rolling.decide(spec, first.state, observed)
    assert (
        first.actions == second.actions == (W(83, 17), ScaleRelease("v2", 1), ScaleRelease("v1", 4))
    )
    assert first.state == second.state


def test_state_survives_a_json_round_trip() -> None:
    spec = RolloutSpec("rolling", "v2", "v1", config())
    decision = rolling.decide(spec, rolling.initial_state(spec, T0), Observed(T0, up("v1", 5)))
    assert persisted(decision.state) == decision.state


# --- simulation -------------------------------------------------------------------------------


@dataclass
class Instance:
    id: str
    release: str
    ready_at: int
    ready_since: float | None = None
    gone_at: int | None = None
    """Tick at which a draining instance has stopped; None while serving."""


@dataclass
class World:
    """Applies actions to an in-memory set of instances, one tick = one second.

    It is deliberately unkind: a new instance needs 1-3 ticks to become ready, draining takes 2
    ticks, and scaling down drains *ready* instances first, the worst case for capacity."""

    instances: list[Instance]
    tick: int = 0
    serial: int = 0
    delays: tuple[int, ...] = (1, 2, 3)
    """Ticks a new instance takes to become ready, in turn."""

    @property
    def now(self) -> float:
        return T0 + self.tick

    def apply(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            if isinstance(action, ScaleRelease):
                self._scale(action.release, action.replicas)

    def _scale(self, release: str, replicas: int) -> None:
        serving = [i for i in self.instances if i.release == release and i.gone_at is None]
        for _ in range(replicas - len(serving)):
            self.serial += 1
            delay = self.delays[self.serial % len(self.delays)]
            self.instances.append(Instance(f"{release}-{self.serial}", release, self.tick + delay))
        surplus = len(serving) - replicas
        by_readiness = sorted(serving, key=lambda i: i.ready_since is None)
        for instance in by_readiness[: max(0, surplus)]:
            instance.gone_at = self.tick + 2

    def advance(self) -> None:
        self.tick += 1
        self.instances = [i for i in self.instances if i.gone_at is None or i.gone_at > self.tick]
        for i in self.instances:
            if i.ready_since is None and i.gone_at is None and self.tick >= i.ready_at:
                i.ready_since = self.now

    def observe(self, command: Command | None = None) -> Observed:
        views = tuple(
            InstanceView(
                i.id,
                i.release,
                ready=i.ready_since is not None,
                draining=i.gone_at is not None,
                ready_since=i.ready_since,
            )
            for i in self.instances
        )
        return Observed(self.now, views, command=command)

    def capacity(self) -> int:
        return sum(1 for i in self.instances if i.ready_since is not None and i.gone_at is None)

    def count(self, release: str) -> int:
        return sum(1 for i in self.instances if i.release == release and i.gone_at is None)


def stable_world(release: str, n: int) -> World:
    world = World([Instance(f"{release}-old{k}", release, 0, T0 - 100) for k in range(n)])
    return world


def run(spec: RolloutSpec, world: World, max_ticks: int = 400) -> tuple[Finish, list[int], int]:
    """Step the planner to the end; return the finish, capacity after every action, peak size."""
    state = rolling.initial_state(spec, world.now)
    capacities, peak = [], len(world.instances)
    for _ in range(max_ticks):
        decision = rolling.decide(spec, state, world.observe())
        world.apply(decision.actions)
        capacities.append(world.capacity())
        peak = max(peak, len(world.instances))
        if decision.finished:
            return decision.finished, capacities, peak
        state = persisted(decision.state)
        world.advance()
        capacities.append(world.capacity())
    raise AssertionError(f"no finish after {max_ticks} ticks; state {state}")


BUDGETS = [
    # replicas, max_surge, max_unavailable, min_ready
    (5, 1, 0, 0),
    (5, 0, 1, 0),
    (10, "25%", "25%", 0),
    (3, 0, 0, 0),
    (4, "100%", 0, 0),
    (7, 2, 3, 2),
    (1, 1, 0, 0),
    (1, 0, 1, 0),
    (6, "50%", "0%", 3),
    (9, "10%", "10%", 1),
    (8, 1, "100%", 0),
]


@pytest.mark.parametrize(("replicas", "surge", "unavailable", "min_ready"), BUDGETS)
def test_simulation_keeps_capacity_and_terminates(
    replicas: int, surge: int | str, unavailable: int | str, min_ready: float
) -> None:
    """Invariant 3: ready, non-draining instances >= replicas - max_unavailable at every step,
    never more than replicas + max_surge instances (draining ones included), and it ends."""
    spec = RolloutSpec(
        "rolling", "v2", "v1", config(replicas, surge, unavailable, min_ready=min_ready, watch=0)
    )
    plan = rolling.budget(spec)
    world = stable_world("v1", replicas)
    finish, capacities, peak = run(spec, world)
    assert finish == Finish("completed", "v2 serves all traffic")
    assert min(capacities) >= plan.min_available
    assert peak <= plan.max_total
    assert world.count("v2") == replicas
    assert world.count("v1") == 0


COUNTS = st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%", "100%"]))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    replicas=st.integers(1, 12),
    surge=COUNTS,
    unavailable=COUNTS,
    min_ready=st.integers(0, 3),
    delays=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
)
def test_any_budget_keeps_capacity_and_terminates(
    replicas: int, surge: int | str, unavailable: int | str, min_ready: int, delays: tuple[int, ...]
) -> None:
    """The same invariants for generated budgets and readiness delays."""
    spec = RolloutSpec(
        "rolling", "v2", "v1", config(replicas, surge, unavailable, min_ready=min_ready, watch=0)
    )
    plan = rolling.budget(spec)
    world = stable_world("v1", replicas)
    world.delays = delays
    finish, capacities, peak = run(spec, world)
    assert finish.outcome == "completed"
    assert min(capacities) >= plan.min_available
    assert peak <= plan.max_total
    assert (world.count("v1"), world.count("v2")) == (0, replicas)


def test_five_replicas_surge_one_is_exactly_one_at_a_time() -> None:
    """start 1 new (6 running), wait ready, drain 1 old (5), start the next new, ... 5 times."""
    spec = RolloutSpec("rolling", "v2", "v1", config(5, 1, 0, watch=0))
    world = stable_world("v1", 5)
    state = rolling.initial_state(spec, world.now)
    moves: list[tuple[str, int]] = []
    targets = {"v1": 5, "v2": 0}
    for _ in range(200):
        decision = rolling.decide(spec, state, world.observe())
        for action in decision.actions:
            if isinstance(action, ScaleRelease) and targets[action.release] != action.replicas:
                targets[action.release] = action.replicas
                moves.append((action.release, action.replicas))
        world.apply(decision.actions)
        if decision.finished:
            break
        state = decision.state
        world.advance()
    expected = []
    for k in range(1, 6):
        expected += [("v2", k), ("v1", 5 - k)]
    assert moves == expected


@pytest.mark.parametrize(("old", "replicas"), [(3, 5), (6, 4)])
def test_simulation_with_a_changed_replica_count(old: int, replicas: int) -> None:
    spec = RolloutSpec("rolling", "v2", "v1", config(replicas, 1, 0, watch=0))
    world = stable_world("v1", old)
    finish, capacities, _ = run(spec, world)
    assert finish.outcome == "completed"
    assert min(capacities[1:]) >= min(old, replicas)
    assert (world.count("v1"), world.count("v2")) == (0, replicas)


def test_simulation_stalled_by_a_slow_release_rolls_back_with_capacity_kept() -> None:
    """A release that never turns ready: the deadline passes, v1 is restored, v2 stopped."""
    spec = RolloutSpec("rolling", "v2", "v1", config(4, 1, 1, deadline=30, watch=0))
    world = stable_world("v1", 4)
    world.serial = 10**6  # new instances become ready after ~a million ticks: never, here
    original = world._scale

    def slow(release: str, replicas: int) -> None:
        original(release, replicas)
        for i in world.instances:
            if i.release == "v2":
                i.ready_at = 10**9

    world._scale = slow  # type: ignore[method-assign]
    finish, capacities, _ = run(spec, world)
    assert finish.outcome == "rolled_back"
    assert finish.reason.startswith("rolling: no progress for 31s (progress_deadline 30s)")
    assert min(capacities) >= 3
    assert (world.count("v1"), world.count("v2")) == (4, 0)


def test_module_worked_examples() -> None:
    """The doctests in nonstop.plan.rolling (budget arithmetic, equal shares) hold."""
    result = doctest.testmod(rolling)
    assert result.attempted >= 4
    assert result.failed == 0
