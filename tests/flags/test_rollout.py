"""Guarded gradual rollout: the pure decision table, and the service driving it with a
fake error_rate (short --every), across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.harness import free_port
from flags.conftest import FakeErrors, ServiceThread
from flags.test_client_api import wait_for
from nonstop.errors import StateError, UsageError
from nonstop.flags.rollout import Plan, decide, new_plan

# steps 1,5,25; every 600 s; max error rate 0.05; min requests 20 (the module's examples)
BASE = Plan((1, 5, 25), 600.0, 0.05, 20, 0, 1000.0)


def at(index: int, started: float = 1000.0, rate: float | None = 0.05) -> Plan:
    return Plan((1, 5, 25), 600.0, rate, 20, index, started)


@pytest.mark.parametrize(
    ("plan", "now", "errors", "requests", "action", "next_plan", "reason"),
    [
        (at(0), 1300, 3, 100, "wait", at(0), ""),
        (at(0), 1300, 5, 100, "wait", at(0), ""),  # exactly 5%: not above
        (at(0), 1600, 0, 10, "advance", at(1, 1600), "step 2 of 3: 5%"),
        (at(0), 1600, 0, 0, "advance", at(1, 1600), "step 2 of 3: 5%"),
        (at(1), 1300, 5, 10, "wait", at(1), ""),  # 10 < 20 requests: too few to judge
        (
            at(1),
            1300,
            6,
            100,
            "abort",
            at(1),
            "error rate 6.0% (6 of 100 requests) is above 5.0% at step 2 of 3 (5%)",
        ),
        (
            at(1),
            1600,
            20,
            20,
            "abort",
            at(1),
            "error rate 100.0% (20 of 20 requests) is above 5.0% at step 2 of 3 (5%)",
        ),
        (at(2), 1600, 0, 50, "complete", at(2), "rollout complete at 25%"),
        (at(2), 1599, 0, 50, "wait", at(2), ""),
        (at(1, rate=None), 1300, 100, 100, "wait", at(1, rate=None), ""),  # no guard
    ],
)
def test_decide(
    plan: Plan,
    now: float,
    errors: int,
    requests: int,
    action: str,
    next_plan: Plan,
    reason: str,
) -> None:
    decision = decide(plan, now, errors, requests)
    assert (decision.action, decision.plan, decision.reason) == (action, next_plan, reason)


def test_plan_round_trips() -> None:
    assert Plan.from_dict(BASE.to_dict()) == BASE


@pytest.mark.parametrize(
    ("steps", "every", "rate", "min_requests", "message"),
    [
        ([], 1, 0.05, 0, "--steps: expected percentages"),
        ([1, 150], 1, 0.05, 0, "--steps[1]: expected a percentage 0..100, got 150"),
        ([5, 5], 1, 0.05, 0, "--steps[1]: steps must increase, got 5 then 5"),
        ([1, 5], 0, 0.05, 0, "--every: expected a positive duration"),
        ([1, 5], 1, 1.5, 0, "--max-error-rate: expected 0..1, got 1.5"),
        ([1, 5], 1, 0.05, -1, "--min-requests: expected 0 or more, got -1"),
    ],
)
def test_new_plan_rejects(
    steps: list[int], every: float, rate: float, min_requests: int, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        new_plan(steps, every, rate, min_requests, 0.0)
    assert message in str(caught.value)


def percent(server: ServiceThread, name: str) -> str:
    return str(server.call("GET", f"/v1/flags/{name}")["rollout"])


def guarded(steps: list[int], every: str = "0.2s", **extra: object) -> dict[str, object]:
    return {"steps": steps, "every": every, "max_error_rate": 0.05, "min_requests": 10, **extra}


def test_steps_advance_to_completion(server: ServiceThread, fake_errors: FakeErrors) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout"})
    fake_errors.requests = 100  # healthy traffic: 0 errors
    server.call("POST", "/v1/flags/checkout/rollout", guarded([10, 50, 100]))
    assert wait_for(
        lambda: server.call("GET", "/v1/flags/checkout")["guarded_rollout"] == "completed"
    )
    shown = server.call("GET", "/v1/flags/checkout")
    assert (shown["enabled"], shown["rollout"]) == (True, "100")
    messages = [e["message"] for e in shown["events"]]
    assert "guarded rollout: step 2 of 3: 50%" in messages
    assert "guarded rollout: step 3 of 3: 100%" in messages
    assert messages[-1] == "rollout complete at 100%"
    assert fake_errors.calls  # the error rate was consulted


def test_error_spike_disables_the_flag_with_the_reason(
    server: ServiceThread, fake_errors: FakeErrors
) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout"})
    server.call("POST", "/v1/flags/checkout/rollout", guarded([5, 25, 100], every="1h"))
    assert percent(server, "checkout") == "5"
    fake_errors.errors, fake_errors.requests = 30, 100
    assert wait_for(lambda: server.call("GET", "/v1/flags/checkout")["guarded_rollout"] == "failed")
    shown = server.call("GET", "/v1/flags/checkout")
    reason = "error rate 30.0% (30 of 100 requests) is above 5.0% at step 1 of 3 (5%)"
    assert shown["enabled"] is False
    assert shown["guarded"]["reason"] == reason
    assert shown["events"][-1] == {
        "ts": shown["events"][-1]["ts"],
        "level": "error",
        "message": f"disabled automatically: {reason}",
    }
    assert ("error", f"flag checkout: disabled automatically: {reason}") in server.events


def test_too_few_requests_judge_nothing(server: ServiceThread, fake_errors: FakeErrors) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout"})
    fake_errors.errors, fake_errors.requests = 5, 5  # 100% of 5 requests, min is 10
    server.call("POST", "/v1/flags/checkout/rollout", guarded([5, 100]))
    assert wait_for(
        lambda: server.call("GET", "/v1/flags/checkout")["guarded_rollout"] == "completed"
    )
    assert server.call("GET", "/v1/flags/checkout")["enabled"] is True


def test_stop_and_conflicts(server: ServiceThread) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout"})
    server.call("POST", "/v1/flags/checkout/rollout", guarded([5, 100], every="1h"))
    with pytest.raises(StateError, match='a guarded rollout of "checkout" is running'):
        server.call("POST", "/v1/flags/checkout/rollout", {"percent": 50})
    server.call("POST", "/v1/flags/checkout/rollout", {"stop": True})
    shown = server.call("GET", "/v1/flags/checkout")
    assert (shown["guarded_rollout"], shown["rollout"]) == ("stopped", "5")
    with pytest.raises(StateError, match="no guarded rollout running"):
        server.call("POST", "/v1/flags/checkout/rollout", {"stop": True})


def test_kill_switch_stops_a_guarded_rollout(server: ServiceThread) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout"})
    server.call("POST", "/v1/flags/checkout/rollout", guarded([5, 100], every="1h"))
    server.call("POST", "/v1/flags/checkout/disable")
    shown = server.call("GET", "/v1/flags/checkout")
    assert (shown["enabled"], shown["guarded_rollout"]) == (False, "stopped")
    assert shown["guarded"]["reason"] == "stopped: the flag was disabled by hand"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"steps": "1,5"}, "--steps: expected whole percentages"),
        ({"steps": [1, 5], "every": "soon"}, "--every: expected a duration"),
        ({"steps": [1, 5], "max_error_rate": "high"}, "--max-error-rate: expected a number"),
        ({"steps": [1, 5], "min_requests": 1.5}, "--min-requests: expected a whole number"),
        ({"steps": [50, 10]}, "--steps[1]: steps must increase"),
        ({"percent": 101}, "--percent: expected a whole percentage 0..100, got 101"),
        ({"stop": "yes"}, "rollout: \"stop\" must be true, got 'yes'"),
        ({"stop": 1}, 'rollout: "stop" must be true, got 1'),
        ({"stop": True, "percent": 5}, "rollout: expected"),
        ({"percent": 5, "extra": 1}, "rollout: expected"),
        ({}, "rollout: expected"),
        ({"every": "1m"}, "rollout: expected"),
        ({"steps": [1, 5], "every": "99999999999999d"}, "--every: expected 100ms to 30d"),
        ({"steps": [1, 5], "every": "31d"}, "--every: expected 100ms to 30d"),
        ({"steps": [1, 5], "every": 0.05}, "--every: expected 100ms to 30d"),
        ({"steps": [1, 5], "every": True}, "--every: expected a duration"),
        ({"steps": [1, 5], "min_requests": 10**10}, "--min-requests: expected a whole number"),
        ({"steps": [1, 5], "max_error_rate": 2}, "--max-error-rate: expected 0..1"),
    ],
)
def test_bad_rollout_requests(server: ServiceThread, body: dict[str, object], message: str) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout"})
    with pytest.raises(UsageError) as caught:
        server.call("POST", "/v1/flags/checkout/rollout", body)
    assert message in str(caught.value)
    assert server.call("GET", "/v1/flags/checkout")["guarded_rollout"] is None


def test_rollout_resumes_after_a_restart(tmp_path: Path, fake_errors: FakeErrors) -> None:
    listen = f"127.0.0.1:{free_port()}"
    first = ServiceThread(tmp_path, listen, fake_errors).start()
    try:
        first.call("POST", "/v1/flags", {"name": "checkout"})
        first.call("POST", "/v1/flags/checkout/rollout", guarded([5, 50], every="1s"))
    finally:
        first.stop()  # the agent goes away mid-step
    second = ServiceThread(tmp_path, listen, fake_errors).start()
    try:
        assert ("info", "flags: resuming the guarded rollout of checkout") in second.events
        assert wait_for(
            lambda: second.call("GET", "/v1/flags/checkout")["guarded_rollout"] == "completed"
        )
        assert percent(second, "checkout") == "50"
    finally:
        second.stop()
