"""Blue-green planner, from a table of cases: (config, phase, observation) -> actions, next phase.

Each row reads as a worked example; the runner at the bottom is the only logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from nonstop.analysis.measurement import Measurement
from nonstop.config.load import validate_config
from nonstop.plan import bluegreen
from nonstop.plan.model import (
    Action,
    Finish,
    InstanceView,
    Observed,
    RolloutSpec,
    RolloutState,
    RunSmoke,
    ScaleRelease,
    SetWeights,
)

T0 = 1_000.0


def config(**strategy: Any) -> Any:
    return validate_config(
        {
            "app": {"name": "shop", "command": "app --port {port}", "replicas": 2},
            "strategy": {"kind": "bluegreen", "bluegreen": strategy},
            "watch": {"duration": 60, "max_error_rate": 0.02, "min_requests": 50},
        }
    )


def ready(release: str, n: int, *, failed: str | None = None) -> tuple[InstanceView, ...]:
    return tuple(
        InstanceView(f"{release}-{i}", release, ready=failed is None, failed=failed)
        for i in range(1, n + 1)
    )


def measured(
    release: str, requests: int, errors: int, *, complete: bool = True
) -> dict[str, Measurement]:
    status = {"2xx": requests - errors, "5xx": errors}
    return {release: Measurement(release, T0, T0 + 10, requests, status, complete=complete)}


def crash_looping(release: str, n: int) -> tuple[InstanceView, ...]:
    why = "crash-looping: restarted 3 times within 120s (last: exited with code 1)"
    return tuple(
        InstanceView(f"{release}-{i}", release, ready=False, failed=why) for i in range(1, n + 1)
    )


@dataclass
class Case:
    name: str
    phase: str
    observed: Observed
    actions: list[Action]
    next_phase: str
    strategy: dict[str, Any] = field(default_factory=dict)
    stable: str | None = "v1"
    rollback: bool = False
    phase_age: float = 0.0


CASES = [
    Case(
        "start: ask for the whole idle side, no traffic yet",
        "starting",
        Observed(now=T0, instances=ready("v1", 2)),
        [ScaleRelease("v2", 2)],
        "starting",
    ),
    Case(
        "one of two ready: keep waiting, v1 untouched",
        "starting",
        Observed(now=T0, instances=ready("v1", 2) + ready("v2", 1)),
        [ScaleRelease("v2", 2)],
        "starting",
    ),
    Case(
        "all ready, no smoke, auto promote: switch and watch",
        "starting",
        Observed(now=T0, instances=ready("v1", 2) + ready("v2", 2)),
        [SetWeights({"v2": 100})],
        "watching",
    ),
    Case(
        "all ready with a smoke command: run it before any traffic",
        "starting",
        Observed(now=T0, instances=ready("v1", 2) + ready("v2", 2)),
        [ScaleRelease("v2", 2), RunSmoke("v2")],
        "smoke",
        strategy={"smoke": "curl -f $NONSTOP_TARGET_URL"},
    ),
    Case(
        "never ready: abort, stop v2, v1 keeps all traffic",
        "starting",
        Observed(now=T0, instances=ready("v1", 2) + ready("v2", 2, failed="not ready after 60s")),
        [
            ScaleRelease("v2", 0),
            Finish("aborted", "v2-1 did not become ready: not ready after 60s"),
        ],
        "aborted",
    ),
    Case(
        "smoke still running",
        "smoke",
        Observed(now=T0, instances=ready("v1", 2) + ready("v2", 2)),
        [RunSmoke("v2")],
        "smoke",
        strategy={"smoke": "true"},
    ),
    Case(
        "smoke failed: abort before any traffic moved",
        "smoke",
        Observed(now=T0, instances=ready("v2", 2), smoke="failed: exit code 1"),
        [ScaleRelease("v2", 0), Finish("aborted", "smoke test failed: exit code 1")],
        "aborted",
        strategy={"smoke": "false"},
    ),
    Case(
        "smoke passed, manual promote: wait for the operator",
        "smoke",
        Observed(now=T0, instances=ready("v2", 2), smoke="passed"),
        [],
        "awaiting_promote",
        strategy={"smoke": "true", "auto_promote": False},
    ),
    Case(
        "operator promotes",
        "awaiting_promote",
        Observed(now=T0, instances=ready("v2", 2), command="promote"),
        [SetWeights({"v2": 100})],
        "watching",
        strategy={"auto_promote": False},
    ),
    Case(
        "watch: 1 error in 40 requests is below min_requests (50): no verdict yet",
        "watching",
        Observed(now=T0 + 10, measurements=measured("v2", 40, 1)),
        [],
        "watching",
    ),
    Case(
        "watch: 12/500 = 2.4% > 2%: traffic back to v1 first, then stop v2",
        "watching",
        Observed(now=T0 + 10, measurements=measured("v2", 500, 12)),
        [
            SetWeights({"v1": 100}),
            ScaleRelease("v2", 0),
            Finish(
                "rolled_back",
                "watch: error_rate 0.024 > max 0.02 over 500 requests (promoted v2, "
                "00:16:40-00:16:50)",
            ),
        ],
        "rolled_back",
    ),
    Case(
        "watch over at 1.0% errors: completed; v1 stays warm (the engine retires it later)",
        "watching",
        Observed(now=T0 + 61, measurements=measured("v2", 1000, 10)),
        [Finish("completed", "v2 serves all traffic (10/1000 errors during the watch)")],
        "completed",
    ),
    Case(
        "operator abort during the watch switches back",
        "watching",
        Observed(now=T0 + 5, command="abort"),
        [
            SetWeights({"v1": 100}),
            ScaleRelease("v2", 0),
            Finish("rolled_back", "abort requested by operator"),
        ],
        "rolled_back",
    ),
    Case(
        "first deploy: nothing to watch against; switch, then a short check",
        "starting",
        Observed(now=T0, instances=ready("v2", 2)),
        [SetWeights({"v2": 100})],
        "watching",
        stable=None,
    ),
    Case(
        "first deploy with manual promote: nothing serves yet, so switch at once",
        "starting",
        Observed(now=T0, instances=ready("v2", 2)),
        [SetWeights({"v2": 100})],
        "watching",
        strategy={"auto_promote": False},
        stable=None,
    ),
    Case(
        "first deploy check over (10s), instances stayed up: completed",
        "watching",
        Observed(now=T0 + 11, instances=ready("v2", 2)),
        [Finish("completed", "v2 serves all traffic (no requests during the check)")],
        "completed",
        stable=None,
    ),
    Case(
        "first deploy: an instance restarted during the check (ready, then dead): stop, abort",
        "watching",
        Observed(
            now=T0 + 3,
            instances=(*ready("v2", 1), InstanceView("v2-2", "v2", False, started_at=T0 + 1.5)),
        ),
        [
            SetWeights(None),
            ScaleRelease("v2", 0),
            Finish("aborted", "check: v2-2 restarted since the switch"),
        ],
        "aborted",
        stable=None,
    ),
    Case(
        "rollback to a warm previous release: one weight change, then a short check",
        "starting",
        Observed(now=T0, instances=ready("v1", 2) + ready("v2", 2)),
        [SetWeights({"v2": 100})],
        "watching",
        strategy={"smoke": "false"},
        rollback=True,
    ),
    Case(
        "rollback check over (10s), v2 served: completed",
        "watching",
        Observed(now=T0 + 11, instances=ready("v2", 2), measurements=measured("v2", 300, 0)),
        [Finish("completed", "v2 serves all traffic (0/300 errors during the check)")],
        "completed",
        rollback=True,
    ),
    Case(
        "rollback onto a crashing release: traffic back to v1, v2 kept, never a success",
        "watching",
        Observed(now=T0 + 4, instances=ready("v1", 2) + crash_looping("v2", 2)),
        [
            SetWeights({"v1": 100}),
            Finish(
                "rolled_back",
                "watch: v2-1 crash-looping: restarted 3 times within 120s (last: exited with "
                "code 1)",
            ),
        ],
        "rolled_back",
        rollback=True,
    ),
    Case(
        "watch: a candidate instance crash-loops: roll back at once, whatever the error rate",
        "watching",
        Observed(
            now=T0 + 5,
            instances=ready("v1", 2) + crash_looping("v2", 1),
            measurements=measured("v2", 10, 0),
        ),
        [
            SetWeights({"v1": 100}),
            ScaleRelease("v2", 0),
            Finish(
                "rolled_back",
                "watch: v2-1 crash-looping: restarted 3 times within 120s (last: exited with "
                "code 1)",
            ),
        ],
        "rolled_back",
    ),
    Case(
        "watch over, v2 got no request while the service answered 140: not serving, roll back",
        "watching",
        Observed(now=T0 + 61, instances=ready("v2", 2), traffic=140),
        [
            SetWeights({"v1": 100}),
            ScaleRelease("v2", 0),
            Finish(
                "rolled_back",
                "watch: no request reached v2 while the service answered 140; it is not serving",
            ),
        ],
        "rolled_back",
    ),
    Case(
        "watch over, no request anywhere (an idle service): nothing to judge, completed",
        "watching",
        Observed(now=T0 + 61, instances=ready("v2", 2), traffic=0),
        [Finish("completed", "v2 serves all traffic (no requests during the watch)")],
        "completed",
    ),
    Case(
        "watch over on a window that spans an agent restart: never a pass, watch again",
        "watching",
        Observed(now=T0 + 61, measurements=measured("v2", 900, 0, complete=False), traffic=900),
        [],
        "watching",
    ),
    Case(
        "starting: 1/2 ready after the progress deadline (nothing failed yet): abort, say why",
        "starting",
        Observed(
            now=T0,
            instances=ready("v1", 2) + ready("v2", 1) + (InstanceView("v2-2", "v2", False),),
        ),
        [
            ScaleRelease("v2", 0),
            Finish(
                "aborted",
                "starting: no progress for 601s (progress_deadline 600s): v2 has 1/2 ready; "
                "v2-2 not ready",
            ),
        ],
        "aborted",
        phase_age=601,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bluegreen_table(case: Case) -> None:
    spec = RolloutSpec("bluegreen", "v2", case.stable, config(**case.strategy), case.rollback)
    state = RolloutState(case.phase, phase_started_at=T0 - case.phase_age)
    decision = bluegreen.decide(spec, state, case.observed)
    assert list(decision.actions) == case.actions
    assert decision.state.phase == case.next_phase


def test_decide_is_idempotent_for_the_same_observation() -> None:
    """Replaying a decision after a crash yields the same actions (invariant 4)."""
    spec = RolloutSpec("bluegreen", "v2", "v1", config())
    observed = Observed(now=T0, instances=ready("v1", 2) + ready("v2", 1))
    state = bluegreen.initial_state(spec, T0)
    first = bluegreen.decide(spec, state, observed)
    second = bluegreen.decide(spec, first.state, observed)
    assert first.actions == second.actions
    assert first.state == second.state


def test_unknown_phase_is_a_programming_error() -> None:
    spec = RolloutSpec("bluegreen", "v2", "v1", config())
    with pytest.raises(ValueError, match="no phase 'sideways'"):
        bluegreen.decide(spec, RolloutState("sideways", T0), Observed(now=T0))
