"""Canary planner: a step whose error rate cannot be told from its limit, and a sequential
test that cannot run. Windows of 10 s from T0; the canary is at 10% (100 of 1000 requests)."""

from __future__ import annotations

from typing import Any

from nonstop.analysis.checks import new_run
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.sequential import SequentialRun
from nonstop.config.load import validate_config
from nonstop.config.schema import NonstopConfig
from nonstop.plan import canary
from nonstop.plan.model import Decision, InstanceView, Observed, RolloutSpec, RolloutState

T0 = 1_000.0
AT_10 = {"weight": 10, "canary": 1, "traffic": True, "weight_ok": True}


def config(
    check: dict[str, Any], *, sequential: bool = False, pause: float | None = 60
) -> NonstopConfig:
    first: dict[str, Any] = {"weight": 10, "analysis": [check]}
    if pause is not None:
        first["pause"] = pause
    steps = [first, {"weight": 50}]
    data: dict[str, Any] = {
        "app": {"name": "shop", "command": "app --port {port}", "replicas": 4},
        "strategy": {"kind": "canary", "canary": {"steps": steps, "sequential": sequential}},
    }
    return validate_config(data)


def instances() -> tuple[InstanceView, ...]:
    return (
        *(InstanceView(f"v1-{i}", "v1", ready=True, ready_since=T0) for i in range(4)),
        InstanceView("v2-0", "v2", ready=True, ready_since=T0),
    )


def counts(release: str, start: float, end: float, requests: int, errors: int) -> Measurement:
    status = {"2xx": requests - errors, "5xx": errors}
    return Measurement(release, start, end, requests, status, 0, {99.0: 40.0} if requests else {})


def at_step(spec: RolloutSpec) -> RolloutState:
    state = canary.initial_state(spec, T0)
    plan = canary.steps(spec)
    data = {**state.data, **AT_10, "analysis": new_run(plan[0].analysis or ()).to_dict()}
    return RolloutState("step", T0, 0, False, {**data, "step_started_at": T0})


def windows(
    spec: RolloutSpec,
    state: RolloutState,
    seconds: int,
    canary_counts: tuple[int, int],
    stable_counts: tuple[int, int] = (900, 1),
) -> list[Decision]:
    """Decide at the end of each 10 s window for ``seconds``: the canary serves
    ``canary_counts`` (requests, errors) per window, the stable release ``stable_counts``."""
    decisions = []
    for k in range(1, seconds // 10 + 1):
        now, start = T0 + 10 * k, state.phase_started_at
        measured = {
            "v2": counts("v2", start, now, *canary_counts),
            "v1": counts("v1", start, now, *stable_counts),
        }
        decision = canary.decide(spec, state, Observed(now, instances(), None, measured))
        decisions.append(decision)
        state = decision.state
        if state.phase != "step":
            break
    return decisions


# max 0.01 at 95%: 1 error in every 100 requests is exactly the limit, never told from it
AT_LIMIT = {"metric": "error_rate", "max": 0.01, "min_samples": 50, "interval": 10}


STABLE_AT_LIMIT = (900, 9)  # 1%: the stable release sits at the limit too
STABLE_CLEAN = (900, 1)  # 0.11%
STABLE_OVER = (900, 30)  # 3.3%: above the limit with 95% confidence


def test_a_canary_at_its_limit_beside_a_stable_release_there_too_passes_and_says_so() -> None:
    """The pause ends at 60 s with 600 canary requests, 6 errors (95% bounds 0.44%-1.97%
    straddle 1%); the stable release has 54 errors in 5,400 (also 1%): the canary is not worse
    (one-sided p = 0.56), so the step ends and its event says why."""
    spec = RolloutSpec("canary", "v2", "v1", config(AT_LIMIT))
    decisions = windows(spec, at_step(spec), 130, (100, 1), STABLE_AT_LIMIT)
    assert len(decisions) == 6
    assert decisions[-1].state.phase == "scaling"
    passed = next(e for e in decisions[-1].events if e.startswith("step analysis passed"))
    assert (
        "error_rate not shown below the limit but canary not worse than stable at 95%: canary "
        "6/600 errors (1%) vs stable 54/5400 (1%), one-sided p = 0.564"
    ) in passed


def test_a_canary_at_its_limit_worse_than_stable_fails_at_the_end_of_the_step() -> None:
    """Same canary beside a stable release at 0.11%: 6 of the 12 errors on a 10% share
    (p = 0.00053 < 0.05): rolled back when the pause ends, no window having failed."""
    spec = RolloutSpec("canary", "v2", "v1", config(AT_LIMIT))
    decisions = windows(spec, at_step(spec), 130, (100, 1), STABLE_CLEAN)
    assert len(decisions) == 6
    finished = decisions[-1].finished
    assert finished is not None
    assert finished.outcome == "rolled_back"
    assert finished.reason.startswith(
        "analysis failed at the end of step 1: error_rate: canary worse than stable at 95%: "
        "canary 6/600 errors (1%) vs stable 6/5400 (0.111%), one-sided p = 0.000532 < 0.05"
    )


def test_a_stable_release_over_the_limit_measures_on_then_pauses_for_a_person() -> None:
    """The canary cannot be told from its limit and the stable release is above it (3.3%,
    lower 95% bound 3.05%): the step measures on as long again (60 s, 6 windows), then pauses
    with that reason."""
    spec = RolloutSpec("canary", "v2", "v1", config(AT_LIMIT))
    decisions = windows(spec, at_step(spec), 130, (100, 1), STABLE_OVER)
    paused = [i for i, d in enumerate(decisions) if d.state.paused]
    assert paused[0] == 11  # t = 120: 60 s after the pause ended
    assert decisions[10].state.phase == "step"
    assert not decisions[10].state.paused
    event = next(e for e in decisions[11].events if "still inconclusive" in e)
    assert event.startswith(
        "analysis still inconclusive 60s after the step's pause: error_rate: the stable "
        "release itself is above the limit (error_rate 0.0333 > max 0.01 over 10800 requests"
    )
    assert "the canary is not shown to be why: error_rate: canary not worse than stable" in event
    assert event.endswith("paused: `nonstop promote` moves on, `nonstop resume` keeps measuring")
    # a person resumes: measuring goes on
    state = decisions[11].state
    resumed = canary.decide(spec, state, Observed(T0 + 121, instances(), command="resume"))
    assert not resumed.state.paused
    assert resumed.state.data["overtime_since"] == T0 + 121  # the wait starts afresh


def test_without_stable_requests_an_undecided_step_pauses_as_before() -> None:
    spec = RolloutSpec("canary", "v2", "v1", config(AT_LIMIT))
    decisions = windows(spec, at_step(spec), 130, (100, 1), (0, 0))
    paused = [i for i, d in enumerate(decisions) if d.state.paused]
    assert paused[0] == 11
    event = next(e for e in decisions[11].events if "still inconclusive" in e)
    assert "error_rate over the whole step is undecided: error_rate 0.01: not enough" in event


def test_a_step_without_a_pause_that_cannot_tell_pauses_after_six_windows() -> None:
    spec = RolloutSpec("canary", "v2", "v1", config(AT_LIMIT, pause=None))
    decisions = windows(spec, at_step(spec), 80, (100, 1), STABLE_OVER)
    paused = [i for i, d in enumerate(decisions) if d.state.paused]
    assert paused[0] == 6  # first seen undecided at t = 10, paused 60 s later at t = 70
    assert any("still inconclusive 60s after the step's pause" in e for e in decisions[6].events)


def test_undecided_pass_ends_the_step_and_says_so() -> None:
    """Without stable requests to compare with, ``undecided = "pass"`` passes as it did."""
    spec = RolloutSpec("canary", "v2", "v1", config({**AT_LIMIT, "undecided": "pass"}))
    decisions = windows(spec, at_step(spec), 130, (100, 1), (0, 0))
    assert len(decisions) == 6  # t = 60: the pause is over
    assert decisions[-1].state.phase == "scaling"
    passed = next(e for e in decisions[-1].events if e.startswith("step analysis passed"))
    assert 'error_rate not shown above max, passed as undecided = "pass"' in passed


def test_undecided_pass_still_fails_a_canary_worse_than_stable() -> None:
    spec = RolloutSpec("canary", "v2", "v1", config({**AT_LIMIT, "undecided": "pass"}))
    decisions = windows(spec, at_step(spec), 130, (100, 1), STABLE_CLEAN)
    finished = decisions[-1].finished
    assert finished is not None
    assert finished.outcome == "rolled_back"
    assert "canary worse than stable at 95%" in finished.reason


def test_a_clean_step_passes_at_its_pause() -> None:
    """400 requests a window without an error: 2400 by 60 s, 95% upper bound 0.12% <= 1%."""
    spec = RolloutSpec("canary", "v2", "v1", config(AT_LIMIT))
    decisions = windows(spec, at_step(spec), 130, (400, 0))
    assert len(decisions) == 6
    assert decisions[-1].state.phase == "scaling"
    assert any(
        e.startswith("step analysis passed: error_rate: passed") for e in decisions[-1].events
    )


def test_a_clearly_bad_window_still_fails_at_once() -> None:
    """8 errors in 100 requests: 95% lower bound 4% > 1%: rolled back at the first window."""
    spec = RolloutSpec("canary", "v2", "v1", config(AT_LIMIT))
    decisions = windows(spec, at_step(spec), 30, (100, 8))
    assert decisions[0].finished is not None
    assert decisions[0].finished.outcome == "rolled_back"
    assert "error_rate 0.08 > max 0.01 over 100 requests (8 errors; lower 95% bound" in (
        decisions[0].finished.reason
    )


def test_a_sequential_test_without_stable_traffic_is_an_event_not_a_rollback() -> None:
    """The stable release serves nothing (its instances behind another router, say): after 60 s
    without anything to compare, one event, and the explain data says why; no rollback."""
    check = {**AT_LIMIT, "undecided": "pass"}
    spec = RolloutSpec("canary", "v2", "v1", config(check, sequential=True))
    state = at_step(spec)
    events: list[str] = []
    for k in range(1, 9):
        now = T0 + 10 * k
        measured = {"v2": counts("v2", T0, now, 10 * k, 0), "v1": counts("v1", T0, now, 0, 0)}
        decision = canary.decide(spec, state, Observed(now, instances(), None, measured))
        assert decision.finished is None
        events += decision.events
        state = decision.state
    idle = [e for e in events if e.startswith("sequential test could not run")]
    assert idle == [
        "sequential test could not run for 60s: sequential: no stable requests beside 70 canary "
        "requests (00:16:40-00:17:50); nothing to compare the canary with; the threshold "
        "checks still judge"
    ]
    last = SequentialRun.from_dict(state.data["sequential"]).last
    assert last is not None
    assert last.outcome == "inconclusive"
    assert last.reason.startswith("sequential: no stable requests beside 80 canary requests")


def test_an_empty_new_window_does_not_restart_the_idle_clock() -> None:
    """A new window whose first look has no canary request yet says nothing either way: the
    minute without stable requests still counts from the first look (t = 10), not from it."""
    check = {**AT_LIMIT, "undecided": "pass"}
    spec = RolloutSpec("canary", "v2", "v1", config(check, sequential=True, pause=600))
    state = at_step(spec)
    looks: list[tuple[float, float, int]] = [(T0 + t, T0, 10 * t) for t in (10, 20, 30)]
    looks += [(T0 + 31, T0 + 30, 0)]
    looks += [(T0 + t, T0 + 30, 10 * (t - 30)) for t in (40, 50, 60, 70)]
    events: dict[float, tuple[str, ...]] = {}
    for now, start, canary_requests in looks:
        measured = {
            "v2": counts("v2", start, now, canary_requests, 0),
            "v1": counts("v1", start, now, 0, 0),
        }
        decision = canary.decide(spec, state, Observed(now, instances(), None, measured))
        events[now - T0] = tuple(e for e in decision.events if e.startswith("sequential test"))
        state = decision.state
    assert [t for t, found in events.items() if found] == [70.0]
    assert events[70.0][0].startswith("sequential test could not run for 60s: ")


P99_AT_500 = {"metric": "latency", "max": 500, "min_samples": 50, "interval": 10}


def timed(release: str, start: float, end: float, requests: int, slow: int) -> Measurement:
    """``requests`` with their latency counted at 500 ms, ``slow`` of them slower."""
    le = {500.0: requests - slow, float("inf"): requests}
    latency = {99.0: 480.0} if requests else {}
    return Measurement(release, start, end, requests, {"2xx": requests}, 0, latency, True, le)


def latency_windows(
    spec: RolloutSpec, seconds: int, canary_slow: int, stable_slow: int
) -> list[Decision]:
    """10 s windows: the canary 100 requests (``canary_slow`` slower than 500 ms), the stable
    release 900 (``stable_slow``)."""
    state, decisions = at_step(spec), []
    for k in range(1, seconds // 10 + 1):
        now, start = T0 + 10 * k, state.phase_started_at
        measured = {
            "v2": timed("v2", start, now, 100, canary_slow),
            "v1": timed("v1", start, now, 900, stable_slow),
        }
        decision = canary.decide(spec, state, Observed(now, instances(), None, measured))
        decisions.append(decision)
        state = decision.state
        if state.phase != "step":
            break
    return decisions


def test_a_p99_at_its_limit_on_both_releases_passes_the_step() -> None:
    """1 of 100 canary requests and 9 of 900 stable ones slower than 500 ms each window: the
    canary's p99 sits at the limit (600 requests, 6 slow: 95% bounds straddle 1%), stable's
    too: not worse, the step ends at its pause."""
    spec = RolloutSpec("canary", "v2", "v1", config(P99_AT_500))
    decisions = latency_windows(spec, 130, 1, 9)
    assert len(decisions) == 6
    passed = next(e for e in decisions[-1].events if e.startswith("step analysis passed"))
    assert (
        "latency_p99 not shown below the limit but canary not worse than stable at 95%: canary "
        "6/600 slower than 500ms (1%) vs stable 54/5400 (1%)"
    ) in passed


def test_a_p99_slower_than_stable_fails_at_the_end_of_the_step() -> None:
    spec = RolloutSpec("canary", "v2", "v1", config(P99_AT_500))
    decisions = latency_windows(spec, 130, 1, 1)
    finished = decisions[-1].finished
    assert finished is not None
    assert finished.reason.startswith(
        "analysis failed at the end of step 1: latency_p99: canary worse than stable at 95%"
    )
