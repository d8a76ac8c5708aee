"""The fleet planner from tables: each row is (spec, state, what is observed) -> what to do.

Hosts are written as
``"name:active[>rollout][*held][&warm,...][!failed][?trouble][+calling][~unreachable]"``:
``"web2:v1>v2"`` is web2 serving v1 with a rollout to v2 moving, ``"web3:v1~"`` web3 unreachable,
``"web2:v1?reset"`` web2 idle on v1 after the controller's call to it broke off ("reset"),
``"web2:v1+"`` web2 idle on v1 while the controller's deploy call to it is in flight.
Retries are written as ``"host:made@due"``, with ``!`` when the host is still not moving.
``pinned=`` is the release the edge stamps on every request (decision 0581).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from nonstop.fleet.plan import (
    FleetDecision,
    FleetObserved,
    FleetSpec,
    FleetState,
    HostView,
    ReleaseCounts,
    Retry,
    action_from_dict,
    action_to_dict,
    decide,
    rollback_problem,
    start,
)

FOUR = ("web1", "web2", "web3", "web4")
ROLLING = FleetSpec("rolling", "v2", "v1", FOUR, max_unavailable=1, batch_wait=10, retries=3)
NO_RETRY = replace(ROLLING, retries=0)
CANARY = replace(ROLLING, strategy="canary", canary=("web1",), min_requests=20, analysis_duration=5)
BLUEGREEN = replace(ROLLING, strategy="bluegreen")
EDGE_BG = replace(BLUEGREEN, edge_switch=True)
EDGE_ROLLING = replace(ROLLING, edge_switch=True)
EDGE_BACK = replace(ROLLING, candidate="v1", stable="v2", edge_switch=True, rollback=True)
"""``nonstop fleet rollback`` from v2 to v1, warm on every host."""


def host(text: str) -> HostView:
    name, _, rest = text.partition(":")
    reachable = not rest.endswith("~")
    rest = rest.rstrip("~")
    calling = rest.endswith("+")
    rest = rest.rstrip("+")
    rest, _, trouble = rest.partition("?")
    rest, _, failed = rest.partition("!")
    rest, _, kept = rest.partition("&")
    held = rest.endswith("*")
    active, _, rollout = rest.rstrip("*").partition(">")
    warm = frozenset(r for r in (active, rollout, *kept.split(",")) if r)
    return HostView(
        name,
        reachable,
        active or None,
        rollout or None,
        held,
        failed or None,
        warm,
        calling,
        trouble,
    )


def observe(
    now: float,
    *hosts: str,
    command: Any = None,
    pinned: str | None = None,
    **counts: tuple[int, int],
) -> FleetObserved:
    views = {view.name: view for view in map(host, hosts)}
    measured = {release: ReleaseCounts(*pair) for release, pair in counts.items()}
    return FleetObserved(now, views, measured, command, pinned)


def state(phase: str, at: float = 0, **fields: Any) -> FleetState:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    fields["retries"] = tuple(retry(text) for text in fields.get("retries", ()))
    return FleetState(phase, at, **fields)


def retry(text: str) -> Retry:
    """``"web2:1@21!"``: web2, 1 attempt made, the next due at 21, still not moving."""
    host, _, rest = text.partition(":")
    made, _, due = rest.rstrip("!").partition("@")
    return Retry(host, int(made), float(due), "x" if text.endswith("!") else "")


def retries(decision: FleetDecision) -> list[str]:
    return [f"{r.host}:{r.made}@{r.due:g}{'!' * bool(r.reason)}" for r in decision.state.retries]


def acts(decision: FleetDecision) -> list[str]:
    """Actions in a short form: ``deploy web1 v2``, ``front web2,web3``, ``finish completed``."""
    out = []
    for action in decision.actions:
        data = action_to_dict(action)
        assert action_from_dict(data) == action  # journaled actions read back as they were
        kind = data.pop("kind")
        if kind == "front":
            out.append("front " + ",".join(data["enabled"]))
        elif kind == "finish":
            out.append(f"finish {data['outcome']}")
        elif kind == "deploy":
            flags = "".join(f" {k}" for k in ("hold", "rollback") if data[k])
            out.append(f"deploy {data['host']} {data['release']}{flags}")
        elif kind == "pin":
            out.append(f"pin {data['release'] or '-'}")
        else:
            out.append(f"{kind} {data['host']}")
    return out


ALL_V1 = ("web1:v1", "web2:v1", "web3:v1", "web4:v1")

CASES = [
    # rolling, max_unavailable 1, batch_wait 10 -------------------------------------------
    (
        "rolling: first batch drains web1 and deploys it",
        ROLLING,
        state("batch"),
        observe(0, *ALL_V1),
        ["front web2,web3,web4", "deploy web1 v2"],
        "batch",
    ),
    (
        "rolling: waits while web1's own rollout moves",
        ROLLING,
        state("batch", batch=["web1"]),
        observe(2, "web1:v1>v2", *ALL_V1[1:]),
        [],
        "batch",
    ),
    (
        "rolling: web1 serves v2 -> back at the front, then batch_wait",
        ROLLING,
        state("batch", batch=["web1"]),
        observe(3, "web1:v2", *ALL_V1[1:]),
        ["front web1,web2,web3,web4"],
        "wait",
    ),
    (
        "rolling: batch_wait not over: nothing",
        ROLLING,
        state("wait", 3, done=["web1"]),
        observe(8, "web1:v2", *ALL_V1[1:]),
        [],
        "wait",
    ),
    (
        "rolling: batch_wait over: next batch",
        ROLLING,
        state("wait", 3, done=["web1"]),
        observe(13, "web1:v2", *ALL_V1[1:]),
        ["front web1,web3,web4", "deploy web2 v2"],
        "batch",
    ),
    (
        "rolling: max_unavailable 2 takes two hosts at once",
        replace(ROLLING, max_unavailable=2),
        state("batch"),
        observe(0, *ALL_V1),
        ["front web3,web4", "deploy web1 v2", "deploy web2 v2"],
        "batch",
    ),
    (
        "rolling: the last host done: completed, no wait",
        ROLLING,
        state("batch", done=["web1", "web2", "web3"], batch=["web4"]),
        observe(50, "web1:v2", "web2:v2", "web3:v2", "web4:v2"),
        ["front web1,web2,web3,web4"],
        "wait",
    ),
    (
        "rolling: nothing left: finish completed",
        ROLLING,
        state("wait", 50, done=list(FOUR)),
        observe(50, "web1:v2", "web2:v2", "web3:v2", "web4:v2"),
        ["front web1,web2,web3,web4", "finish completed"],
        "batch",
    ),
    (
        "rolling: a host of the batch fails (its own rollout put it back): web1 back to v1",
        ROLLING,
        state("batch", done=["web1"], batch=["web2"]),
        observe(20, "web1:v2", "web2:v1!exited with code 1", "web3:v1", "web4:v1"),
        ["deploy web1 v1 rollback"],
        "rolling_back",
    ),
    (
        "rolling, no retries: a host lost mid-batch pauses (on_host_lost = pause), drained",
        NO_RETRY,
        state("batch", done=["web1"], batch=["web2"]),
        observe(20, "web1:v2", "web2:v1>v2~", "web3:v1", "web4:v1"),
        [],
        "batch",
    ),
    (
        "rolling, no retries: a lost host with on_host_lost = continue: drained, carry on",
        replace(NO_RETRY, on_host_lost="continue"),
        state("batch", done=["web1"], batch=["web2"]),
        observe(20, "web1:v2", "web2:v1>v2~", "web3:v1", "web4:v1"),
        ["front web1,web3,web4"],
        "batch",
    ),
    (
        "rolling: continue skips the lost host in later batches",
        replace(ROLLING, on_host_lost="continue"),
        state("wait", 20, done=["web1"], lost=["web2"]),
        observe(40, "web1:v2", "web2:v1~", "web3:v1", "web4:v1"),
        ["front web1,web4", "deploy web3 v2"],
        "batch",
    ),
    (
        "rolling: deadline passed for the batch: its rollout is aborted",
        replace(ROLLING, deadline=60),
        state("batch", 0, batch=["web1"]),
        observe(61, "web1:v1>v2", *ALL_V1[1:]),
        ["abort web1"],
        "rolling_back",
    ),
    (
        "rolling: operator abort mid-batch: the moving host's rollout is aborted",
        ROLLING,
        state("batch", done=["web1"], batch=["web2"]),
        observe(20, "web1:v2", "web2:v1>v2", "web3:v1", "web4:v1", command="abort"),
        ["deploy web1 v1 rollback", "abort web2"],
        "rolling_back",
    ),
    (
        "rolling: the candidate fails at the front between batches: roll back",
        ROLLING,
        state("wait", 3, done=["web1"]),
        observe(8, "web1:v2", *ALL_V1[1:], v2=(100, 10)),
        ["deploy web1 v1 rollback"],
        "rolling_back",
    ),
    # rolling back --------------------------------------------------------------------------
    (
        "rolling back: waits while hosts move back",
        ROLLING,
        state("rolling_back", reason="x"),
        observe(21, "web1:v2>v1", "web2:v1", "web3:v1", "web4:v1"),
        [],
        "rolling_back",
    ),
    (
        "rolling back: all on v1: finished, every host at the front",
        ROLLING,
        state("rolling_back", reason="x"),
        observe(25, *ALL_V1),
        ["front web1,web2,web3,web4", "finish rolled_back"],
        "rolling_back",
    ),
    (
        "rolling back: an unreachable host is drained and waited for",
        ROLLING,
        state("rolling_back", reason="x"),
        observe(25, "web1:v1", "web2:v2~", "web3:v1", "web4:v1"),
        ["front web1,web3,web4"],
        "rolling_back",
    ),
    (
        "rolling back: the lost host answers on v2: sent back, still drained",
        ROLLING,
        state("rolling_back", reason="x", lost=["web2"]),
        observe(30, "web1:v1", "web2:v2", "web3:v1", "web4:v1"),
        ["deploy web2 v1 rollback"],
        "rolling_back",
    ),
    (
        "rolling back: the lost host serves v1 again: undrained, finished",
        ROLLING,
        state("rolling_back", reason="x", lost=["web2"]),
        observe(35, *ALL_V1),
        ["front web1,web2,web3,web4", "finish rolled_back"],
        "rolling_back",
    ),
    (
        "rolling back: a host away past the deadline stays drained; the rest end it",
        ROLLING,
        state("rolling_back", reason="x", lost=["web2"]),
        observe(601, "web1:v1", "web2:v2~", "web3:v1", "web4:v1"),
        ["front web1,web3,web4", "finish rolled_back"],
        "rolling_back",
    ),
    (
        "rolling back: web2's deploy call still in flight: not back yet, no finish",
        ROLLING,
        state("rolling_back", reason="x"),
        observe(25, "web1:v1", "web2:v1+", "web3:v1", "web4:v1"),
        [],
        "rolling_back",
    ),
    (
        "rolling back: a host that came back on v2 is sent back again",
        ROLLING,
        state("rolling_back", reason="x"),
        observe(25, "web1:v1", "web2:v2", "web3:v1", "web4:v1"),
        ["deploy web2 v1 rollback"],
        "rolling_back",
    ),
    # canary --------------------------------------------------------------------------------
    (
        "canary: the canary host first",
        CANARY,
        state("batch"),
        observe(0, *ALL_V1),
        ["front web2,web3,web4", "deploy web1 v2"],
        "batch",
    ),
    (
        "canary: web1 serves v2: analysis starts, web1 back at the front",
        CANARY,
        state("batch", batch=["web1"]),
        observe(3, "web1:v2", *ALL_V1[1:]),
        ["front web1,web2,web3,web4"],
        "analysis",
    ),
    (
        "canary: 10/100 errors (bound 5.5%) > 2%: web1 back to v1, the others never ran v2",
        CANARY,
        state("analysis", 3, done=["web1"]),
        observe(5, "web1:v2", *ALL_V1[1:], v2=(100, 10)),
        ["deploy web1 v1 rollback"],
        "rolling_back",
    ),
    (
        "canary: 3/100 (3%, bound 1%) after the duration: undecided, keep measuring",
        CANARY,
        state("analysis", 3, done=["web1"]),
        observe(9, "web1:v2", *ALL_V1[1:], v2=(100, 3)),
        [],
        "analysis",
    ),
    (
        "canary: undecided past the deadline: roll back",
        replace(CANARY, deadline=60),
        state("analysis", 3, done=["web1"]),
        observe(64, "web1:v2", *ALL_V1[1:], v2=(1000, 30)),
        ["deploy web1 v1 rollback"],
        "rolling_back",
    ),
    (
        "canary: too few requests to judge: keep measuring",
        CANARY,
        state("analysis", 3, done=["web1"]),
        observe(9, "web1:v2", *ALL_V1[1:], v2=(10, 1)),
        [],
        "analysis",
    ),
    (
        "canary: healthy for analysis_duration: the rest roll",
        CANARY,
        state("analysis", 3, done=["web1"]),
        observe(9, "web1:v2", *ALL_V1[1:], v2=(200, 1)),
        [],
        "batch",
    ),
    (
        "canary: then batches of max_unavailable",
        CANARY,
        state("batch", 9, done=["web1"]),
        observe(9, "web1:v2", *ALL_V1[1:]),
        ["front web1,web3,web4", "deploy web2 v2"],
        "batch",
    ),
    (
        "canary: the canary host lost during analysis: roll back, no pause",
        CANARY,
        state("analysis", 3, done=["web1"]),
        observe(5, "web1:v2~", *ALL_V1[1:]),
        ["deploy web1 v1 rollback"],
        "rolling_back",
    ),
    # blue-green in lockstep ----------------------------------------------------------------
    (
        "bluegreen: every host starts v2 held",
        BLUEGREEN,
        state("prepare"),
        observe(0, *ALL_V1),
        [
            "deploy web1 v2 hold",
            "deploy web2 v2 hold",
            "deploy web3 v2 hold",
            "deploy web4 v2 hold",
        ],
        "prepare",
    ),
    (
        "bluegreen: three of four hold it ready: no switch yet",
        BLUEGREEN,
        state("prepare", batch=list(FOUR)),
        observe(5, "web1:v1>v2*", "web2:v1>v2*", "web3:v1>v2*", "web4:v1>v2"),
        [],
        "prepare",
    ),
    (
        "bluegreen: all hold it ready: every host switches in one decision",
        BLUEGREEN,
        state("prepare", batch=list(FOUR)),
        observe(6, "web1:v1>v2*", "web2:v1>v2*", "web3:v1>v2*", "web4:v1>v2*"),
        ["promote web1", "promote web2", "promote web3", "promote web4"],
        "switch",
    ),
    (
        "bluegreen: one host fails to prepare: all abort before anyone switched",
        BLUEGREEN,
        state("prepare", batch=list(FOUR)),
        observe(6, "web1:v1>v2*", "web2:v1>v2*", "web3:v1>v2*", "web4:v1!smoke test failed"),
        ["abort web1", "abort web2", "abort web3"],
        "rolling_back",
    ),
    (
        "bluegreen: all switched: completed",
        BLUEGREEN,
        state("switch", 6, batch=list(FOUR)),
        observe(7, "web1:v2", "web2:v2", "web3:v2", "web4:v2"),
        ["front web1,web2,web3,web4", "finish completed"],
        "wait",
    ),
    # blue-green switched at the edge (decision 0581) -----------------------------------------
    (
        "edge bluegreen: every host starts v2 held; the edge keeps pinning v1 meanwhile",
        EDGE_BG,
        state("prepare"),
        observe(0, *ALL_V1, pinned="v1"),
        [
            "deploy web1 v2 hold",
            "deploy web2 v2 hold",
            "deploy web3 v2 hold",
            "deploy web4 v2 hold",
        ],
        "prepare",
    ),
    (
        "edge bluegreen: a pin left on an older release goes back to the stable one first",
        EDGE_BG,
        state("prepare"),
        observe(0, *ALL_V1, pinned="v0"),
        ["pin v1"],
        "prepare",
    ),
    (
        "edge bluegreen: all hold it ready: ONE change at the edge, no host promoted yet",
        EDGE_BG,
        state("prepare", batch=list(FOUR)),
        observe(6, "web1:v1>v2*", "web2:v1>v2*", "web3:v1>v2*", "web4:v1>v2*"),
        ["pin v2"],
        "pin",
    ),
    (
        "edge bluegreen: the pin did not take yet (the edge was restarting): pinned again",
        EDGE_BG,
        state("pin", 6, batch=list(FOUR)),
        observe(7, "web1:v1>v2*", "web2:v1>v2*", "web3:v1>v2*", "web4:v1>v2*"),
        ["pin v2"],
        "pin",
    ),
    (
        "edge bluegreen: the edge pins v2: every host is promoted (users see nothing of it)",
        EDGE_BG,
        state("pin", 6, batch=list(FOUR)),
        observe(7, "web1:v1>v2*", "web2:v1>v2*", "web3:v1>v2*", "web4:v1>v2*", pinned="v2"),
        ["promote web1", "promote web2", "promote web3", "promote web4"],
        "switch",
    ),
    (
        "edge bluegreen: all switched: completed, the pin stays on v2",
        EDGE_BG,
        state("switch", 7, batch=list(FOUR)),
        observe(8, "web1:v2", "web2:v2", "web3:v2", "web4:v2", pinned="v2"),
        ["front web1,web2,web3,web4", "finish completed"],
        "wait",
    ),
    (
        "edge bluegreen: web3 fails to switch: the edge pins v1 back first, then the hosts",
        EDGE_BG,
        state("switch", 7, batch=list(FOUR)),
        observe(8, "web1:v2&v1", "web2:v2&v1", "web3:v1>v2*!crashed", "web4:v2&v1", pinned="v2"),
        [
            "pin v1",
            "deploy web1 v1 rollback",
            "deploy web2 v1 rollback",
            "abort web3",
            "deploy web4 v1 rollback",
        ],
        "rolling_back",
    ),
    (
        "edge bluegreen: aborted after web1 and web2 retired v1: no pin, each host's own table",
        EDGE_BG,
        state("switch", 7, batch=list(FOUR)),
        observe(
            700, "web1:v2", "web2:v2", "web3:v1>v2*", "web4:v2&v1", pinned="v2", command="abort"
        ),
        [
            "pin -",
            "deploy web1 v1 rollback",
            "deploy web2 v1 rollback",
            "abort web3",
            "deploy web4 v1 rollback",
        ],
        "rolling_back",
    ),
    (
        "edge bluegreen: rolling back, v1 ready everywhere again (a host away): pinned again",
        EDGE_BG,
        state("rolling_back", 8, reason="x"),
        observe(9, "web1:v2>v1&v1", "web2:v1", "web3:v1", "web4:v2~", pinned=None),
        ["pin v1"],
        "rolling_back",
    ),
    (
        "edge bluegreen: an operator's abort before the pin: v1 pinned, held hosts abort",
        EDGE_BG,
        state("prepare", batch=list(FOUR)),
        observe(3, "web1:v1>v2*", "web2:v1>v2", "web3:v1", "web4:v1", command="abort"),
        ["pin v1", "abort web1", "abort web2"],
        "rolling_back",
    ),
    (
        "edge bluegreen: rolling back waits for the edge to pin v1 before anything else",
        EDGE_BG,
        state("rolling_back", 8, reason="x"),
        observe(9, *ALL_V1, pinned="v2"),
        ["pin v1"],
        "rolling_back",
    ),
    (
        "edge rolling: a pin left by a blue-green is cleared before the first batch",
        EDGE_ROLLING,
        state("batch"),
        observe(0, *ALL_V1, pinned="v1"),
        ["pin -"],
        "batch",
    ),
    (
        "edge rolling: nothing pinned: the first batch as without the edge switch",
        EDGE_ROLLING,
        state("batch"),
        observe(0, *ALL_V1),
        ["front web2,web3,web4", "deploy web1 v2"],
        "batch",
    ),
    (
        "edge rollback: every user back on v1 at once, before any host moves",
        EDGE_BACK,
        state("batch"),
        observe(0, "web1:v2&v1", "web2:v2&v1", "web3:v2&v1", "web4:v2&v1", pinned="v2"),
        ["pin v1"],
        "batch",
    ),
    (
        "edge rollback: pinned to v1: the hosts follow in batches",
        EDGE_BACK,
        state("batch"),
        observe(1, "web1:v2&v1", "web2:v2&v1", "web3:v2&v1", "web4:v2&v1", pinned="v1"),
        ["front web2,web3,web4", "deploy web1 v1"],
        "batch",
    ),
    (
        "hosts switch (no edge switch): a pin is cleared even for blue-green",
        BLUEGREEN,
        state("prepare"),
        observe(0, *ALL_V1, pinned="v1"),
        ["pin -"],
        "prepare",
    ),
]


@pytest.mark.parametrize(
    ("spec", "before", "observed", "expected", "phase"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    spec: FleetSpec, before: FleetState, observed: FleetObserved, expected: list[str], phase: str
) -> None:
    decision = decide(spec, before, observed)
    assert acts(decision) == expected
    assert decision.state.phase == phase
    assert FleetState.from_dict(decision.state.to_dict()) == decision.state


ON_WEB2 = ("web1:v2", "web3:v1", "web4:v1")
"""The others, while web2 is the batch (web1 done)."""
HELD = ("web1:v1>v2*", "web2:v1>v2*", "web3:v1>v2*")
SWITCHED = ("web1:v2", "web2:v2", "web4:v2")

RETRY_CASES = [
    # retries 3 (4 attempts), backoff 1 s doubled: attempt 2 after 1 s, 3 after 2 s, 4 after 4 s
    (
        "retry: web2's deploy call broke off and it is idle: attempt 2 in 1s",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"]),
        observe(20, *ON_WEB2, "web2:v1?its agent did not answer"),
        [],
        "batch",
        ["web2:1@21!"],
    ),
    (
        "retry: web2 unreachable after its deploy: attempt 2 in 1s, no pause yet",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"]),
        observe(20, *ON_WEB2, "web2:v1~"),
        [],
        "batch",
        ["web2:1@21!"],
    ),
    (
        "retry: web2's deploy call still in flight (copy, build): progress, no retry",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"]),
        observe(50, *ON_WEB2, "web2:v1+"),
        [],
        "batch",
        [],
    ),
    (
        "retry: not due yet: wait",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:1@21!"]),
        observe(20.5, *ON_WEB2, "web2:v1"),
        [],
        "batch",
        ["web2:1@21!"],
    ),
    (
        "retry: due and web2 answers: attempt 2 deploys again, attempt 3 after 2s more",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:1@21!"]),
        observe(21, *ON_WEB2, "web2:v1"),
        ["deploy web2 v2"],
        "batch",
        ["web2:2@23!"],
    ),
    (
        "retry: attempt 2 took (web2 moves to v2): the count stays for this batch",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:2@23!"]),
        observe(22, *ON_WEB2, "web2:v1>v2"),
        [],
        "batch",
        ["web2:2@23"],
    ),
    (
        "retry: web2 serves v2 after a retry: batch done, retries cleared",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:2@23"]),
        observe(30, *ON_WEB2, "web2:v2"),
        ["front web1,web2,web3,web4"],
        "wait",
        [],
    ),
    (
        "retry: web2 drops out again later: attempt 3 after 2s (the budget is the batch's)",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:2@23"]),
        observe(25, *ON_WEB2, "web2:v1~"),
        [],
        "batch",
        ["web2:2@27!"],
    ),
    (
        "retry: due while web2 does not answer: attempt 2 spent without a call",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:1@21!"]),
        observe(21.5, *ON_WEB2, "web2:v1~"),
        [],
        "batch",
        ["web2:2@23!"],
    ),
    (
        "retry: one slow tick past every due while unreachable: out of attempts, paused",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:1@21!"]),
        observe(40, *ON_WEB2, "web2:v1~"),
        [],
        "batch",
        ["web2:4@35!"],
    ),
    (
        "retry: out of attempts while answering (the deploy never takes): roll back",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:4@30!"]),
        observe(31, *ON_WEB2, "web2:v1?the agent failed (HTTP 500)"),
        ["deploy web1 v1 rollback"],
        "rolling_back",
        [],
    ),
    (
        "retry: out of attempts, unreachable, on_host_lost = continue: drained, carry on",
        replace(ROLLING, on_host_lost="continue"),
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:4@30!"]),
        observe(31, *ON_WEB2, "web2:v1~"),
        ["front web1,web3,web4"],
        "batch",
        [],
    ),
    (
        "retry: two hosts out of attempts, one of them answers: roll back (not a lost host)",
        replace(ROLLING, max_unavailable=2),
        state("batch", 19, batch=["web1", "web2"], retries=["web1:4@30!", "web2:4@30!"]),
        observe(31, "web1:v1~", "web2:v1", "web3:v1", "web4:v1"),
        ["deploy web1 v1 rollback"],
        "rolling_back",
        [],
    ),
    (
        "retry: retries = 0 and web2 answers without taking v2: roll back at once",
        NO_RETRY,
        state("batch", 19, done=["web1"], batch=["web2"]),
        observe(20, *ON_WEB2, "web2:v1?the agent failed (HTTP 500): disk full"),
        ["deploy web1 v1 rollback"],
        "rolling_back",
        [],
    ),
    (
        "retry: a host's own failed rollout is a verdict, not retried: roll back",
        ROLLING,
        state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:2@23"]),
        observe(25, *ON_WEB2, "web2:v1!readiness failed"),
        ["deploy web1 v1 rollback"],
        "rolling_back",
        [],
    ),
    (
        "retry: the canary host out of attempts, unreachable: roll back, no pause",
        CANARY,
        state("batch", 0, batch=["web1"], retries=["web1:4@30!"]),
        observe(31, "web1:v1~", *ALL_V1[1:]),
        ["deploy web1 v1 rollback"],
        "rolling_back",
        [],
    ),
    (
        "retry: bluegreen: web4's start broke off: started again, held",
        BLUEGREEN,
        state("prepare", 0, batch=list(FOUR), retries=["web4:1@7!"]),
        observe(7, *HELD, "web4:v1"),
        ["deploy web4 v2 hold"],
        "prepare",
        ["web4:2@9!"],
    ),
    (
        "retry: bluegreen: web4 out of attempts: every host aborts, nobody switched",
        BLUEGREEN,
        state("prepare", 0, batch=list(FOUR), retries=["web4:4@20!"]),
        observe(21, *HELD, "web4:v1~"),
        ["abort web1", "abort web2", "abort web3", "deploy web4 v1 rollback"],
        "rolling_back",
        [],
    ),
    (
        "retry: bluegreen: the promote of web3 did not take (still held): promote again when due",
        BLUEGREEN,
        state("switch", 6, batch=list(FOUR), retries=["web3:1@8!"]),
        observe(8, "web1:v2", "web2:v2", "web3:v1>v2*", "web4:v2"),
        ["promote web3"],
        "switch",
        ["web3:2@10!"],
    ),
    (
        "retry: bluegreen: web3 never switches: out of attempts, every host back on v1",
        BLUEGREEN,
        state("switch", 6, batch=list(FOUR), retries=["web3:4@20!"]),
        observe(21, "web1:v2", "web2:v2", "web3:v1>v2*", "web4:v2"),
        [
            "deploy web1 v1 rollback",
            "deploy web2 v1 rollback",
            "abort web3",
            "deploy web4 v1 rollback",
        ],
        "rolling_back",
        [],
    ),
]


@pytest.mark.parametrize(
    ("spec", "before", "observed", "expected", "phase", "after"),
    [case[1:] for case in RETRY_CASES],
    ids=[case[0] for case in RETRY_CASES],
)
def test_retry(
    spec: FleetSpec,
    before: FleetState,
    observed: FleetObserved,
    expected: list[str],
    phase: str,
    after: list[str],
) -> None:
    decision = decide(spec, before, observed)
    assert acts(decision) == expected
    assert decision.state.phase == phase
    assert retries(decision) == after
    assert FleetState.from_dict(decision.state.to_dict()) == decision.state


def test_each_attempt_is_an_event_of_the_journal() -> None:
    """What ``nonstop fleet status`` and the journal say, attempt by attempt."""
    batch = state("batch", 19, done=["web1"], batch=["web2"])
    broke = "web2 (root@10.0.0.12:22): its agent did not answer: connection reset"
    first = decide(ROLLING, batch, observe(20, *ON_WEB2, f"web2:v1?{broke}"))
    assert first.events == (
        f"web2: deploy v2 did not take (attempt 1 of 4): {broke}; retrying in 1s",
    )
    second = decide(ROLLING, first.state, observe(21, *ON_WEB2, "web2:v1"))
    assert acts(second) == ["deploy web2 v2"]
    assert second.events == (f"web2: attempt 2 of 4: deploy v2 ({broke})",)
    took = decide(ROLLING, second.state, observe(22, *ON_WEB2, "web2:v1>v2"))
    assert took.events == ("web2: deploy v2 took on attempt 2 of 4",)


def test_a_host_away_through_every_attempt_then_pauses_naming_them() -> None:
    gone = "cannot connect to web2 (root@10.0.0.12:22): no answer in time"
    at = state("batch", 19, done=["web1"], batch=["web2"], retries=["web2:1@21!"])
    decision = decide(ROLLING, at, observe(40, *ON_WEB2, f"web2:v1?{gone}~"))
    why = f"unreachable: {gone}"
    assert decision.events == (
        f"web2: attempt 2 of 4 not made: {why}",
        f"web2: attempt 3 of 4 not made: {why}",
        f"web2: attempt 4 of 4 not made: {why}",
        f"host web2 is unreachable after 4 attempts: {gone}: paused (`nonstop fleet resume` "
        "or `nonstop fleet abort`)",
    )
    assert decision.state.paused.startswith("host web2 is unreachable after 4 attempts")
    resumed = decide(ROLLING, decision.state, observe(60, *ON_WEB2, "web2:v1", command="resume"))
    assert retries(resumed) == ["web2:1@61!"]  # a fresh budget: web2 is tried again in 1s
    again = decide(ROLLING, resumed.state, observe(61, *ON_WEB2, "web2:v1"))
    assert acts(again) == ["deploy web2 v2"]


def test_a_paused_rollout_waits_for_resume_then_carries_on() -> None:
    paused = decide(
        NO_RETRY,
        state("batch", done=["web1"], batch=["web2"]),
        observe(20, "web1:v2", "web2:v1~", "web3:v1", "web4:v1"),
    )
    assert "host web2 is unreachable: paused" in paused.state.paused
    assert paused.wake_in is None
    still = decide(NO_RETRY, paused.state, observe(30, "web1:v2", "web2:v1", "web3:v1", "web4:v1"))
    assert (still.actions, still.state) == ((), paused.state)
    resumed = decide(
        NO_RETRY,
        paused.state,
        observe(40, "web1:v2", "web2:v2", "web3:v1", "web4:v1", command="resume"),
    )
    assert acts(resumed) == ["front web1,web2,web3,web4"]
    assert resumed.state.done == ("web1", "web2")


def test_replaying_a_decision_changes_nothing() -> None:
    """Idempotence: deciding again from the new state and the same world adds no new move."""
    first = decide(ROLLING, start(ROLLING, 0), observe(0, *ALL_V1))
    again = decide(ROLLING, first.state, observe(0, "web1:v1>v2", *ALL_V1[1:]))
    assert again.actions == ()


def test_a_simulated_rolling_never_has_more_than_max_unavailable_hosts_out() -> None:
    """Drive the planner with a world that obeys it; at every step at most max_unavailable
    hosts are drained, and the end is every host on v2."""
    spec = replace(ROLLING, max_unavailable=2, batch_wait=0)
    world = {name: "v1" for name in FOUR}
    now, current = 0.0, start(spec, 0)
    for _ in range(50):
        decision = decide(spec, current, observe(now, *(f"{h}:{r}" for h, r in world.items())))
        for action in decision.actions:
            data = action_to_dict(action)
            if data["kind"] == "deploy":
                world[data["host"]] = data["release"]
            if data["kind"] == "front":
                assert len(FOUR) - len(data["enabled"]) <= 2
        current, now = decision.state, now + 1
        if decision.finished:
            assert decision.finished.outcome == "completed"
            assert set(world.values()) == {"v2"}
            return
    pytest.fail("the rollout never finished")


def test_an_edge_bluegreen_moves_every_user_in_one_pin_before_any_host_switches() -> None:
    """Drive the planner with a world that obeys it (hosts hold, then switch; the edge pins):
    from the pin on, every request goes to v2, and no host is promoted before it."""
    world = {name: "v1" for name in FOUR}
    held: set[str] = set()
    pins: list[str | None] = []
    now, current, pin = 0.0, start(EDGE_BG, 0), "v1"
    for _ in range(50):
        views = [f"{h}:v1>v2*" if h in held else f"{h}:{r}" for h, r in world.items()]
        decision = decide(EDGE_BG, current, observe(now, *views, pinned=pin))
        for action in decision.actions:
            data = action_to_dict(action)
            if data["kind"] == "deploy":
                held.add(data["host"])
            if data["kind"] == "promote":
                assert pin == "v2", "a host was promoted before the edge pinned v2"
                held.discard(data["host"])
                world[data["host"]] = "v2"
            if data["kind"] == "pin":
                pin = data["release"]
                pins.append(pin)
        current, now = decision.state, now + 1
        if decision.finished:
            assert decision.finished.outcome == "completed"
            assert (set(world.values()), pins) == ({"v2"}, ["v2"])
            return
    pytest.fail("the rollout never finished")


def test_rollback_targets_only_a_release_warm_on_every_host() -> None:
    hosts = [host("web1:v2>v1"), host("web2:v2>v1"), host("web3:v2")]
    assert rollback_problem("v2", hosts) is None
    problem = rollback_problem("v1", hosts)
    assert problem == (
        "release v1 is not warm on web3: a fleet rollback only targets a release every host "
        "still runs; deploy it instead (`nonstop fleet deploy v1`)"
    )
    assert rollback_problem("v2", [*hosts[:2], host("web3:v2~")]) is not None


def test_a_host_lost_during_a_rollback_converges_when_it_answers_again() -> None:
    """Status in between: ``lost`` names it, drained; its return is in the final reason."""
    cut = decide(
        ROLLING,
        state("rolling_back", reason="aborted"),
        observe(5, "web1:v1", "web2:v2~", "web3:v1", "web4:v1"),
    )
    assert cut.state.lost == ("web2",)
    assert cut.events == (
        "web2 unreachable: drained at the front, back on v1 once it answers (waiting up to 600s)",
    )
    waiting = decide(ROLLING, cut.state, observe(9, "web1:v1", "web2:v2~", "web3:v1", "web4:v1"))
    assert (acts(waiting), waiting.state) == ([], cut.state)
    done = decide(ROLLING, cut.state, observe(12, *ALL_V1))
    assert done.finished is not None
    assert done.finished.reason == "aborted; web2 back on v1 once it answered again"
