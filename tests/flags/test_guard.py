"""Guarded rollouts judged on the flag's users: the pure `judge` from a table, outcomes in
metrics posts (validated, saturating), the real SDK reporting them to the real flag service,
and the service disabling, advancing, falling back and resuming on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import free_port
from flags.conftest import FakeErrors, ServiceThread
from flags.test_client_api import post, wait_for
from nonstop.analysis.sequential import Counts
from nonstop.flags import Client
from nonstop.flags.rollout import SERVICE_FALLBACK, Plan, judge, start_test

# steps 10,50; every 600 s; max error rate 0.05 (the fallback's); min 20 flagged outcomes
PLAN = Plan((10, 50), 600.0, 0.05, 20, 0, 0.0, test=start_test(Counts()))
LAST = Plan((10, 50), 600.0, 0.05, 20, 1, 0.0, test=start_test(Counts()))

# plan, now, cumulative (flagged, flagged errors, unflagged, unflagged errors),
# service (errors, requests), action, index after, basis, reason starts with
CASES: list[tuple[Plan, float, tuple[int, ...], tuple[int, int], str, int, str, str]] = [
    # 3 flagged errors, none unflagged, flagged share 10%: rejected before the step's time
    (PLAN, 300, (30, 3, 270, 0), (0, 0), "abort", 0, "outcomes", "the flag's users fail more"),
    # the flag's users fail less than the others: nothing to hold against it
    (PLAN, 300, (30, 0, 270, 3), (0, 0), "wait", 0, "outcomes", ""),
    (PLAN, 700, (30, 1, 270, 9), (0, 0), "advance", 1, "outcomes", "step 2 of 2: 50%"),
    # the step's time passed but only 10 of the 20 flagged outcomes it needs
    (PLAN, 700, (10, 0, 90, 0), (0, 0), "wait", 0, "outcomes", ""),
    (LAST, 700, (30, 0, 30, 0), (0, 0), "complete", 1, "outcomes", "rollout complete at 50%"),
    # the service fails a lot, but the flag's users no more than the others: not the flag
    (PLAN, 300, (30, 3, 270, 27), (50, 100), "wait", 0, "outcomes", ""),
    # no outcome at all: the service's error rate decides, as before
    (PLAN, 700, (0, 0, 0, 0), (0, 100), "advance", 1, "service", "step 2 of 2: 50%"),
    (PLAN, 300, (0, 0, 0, 0), (10, 100), "abort", 0, "service", "error rate 10.0% (10 of 100"),
    (PLAN, 300, (0, 0, 0, 0), (1, 100), "wait", 0, "service", ""),
    # a flagged-only step (100%) gives the test nothing to compare, but counts toward advancing
    (LAST, 700, (25, 5, 0, 0), (0, 0), "complete", 1, "outcomes", "rollout complete at 50%"),
]


@pytest.mark.parametrize(
    ("plan", "now", "outcomes", "service", "action", "index", "basis", "reason"), CASES
)
def test_judge(
    plan: Plan,
    now: float,
    outcomes: tuple[int, int, int, int],
    service: tuple[int, int],
    action: str,
    index: int,
    basis: str,
    reason: str,
) -> None:
    decision = judge(plan, now, Counts(*outcomes), *service)
    assert (decision.action, decision.plan.index, decision.plan.basis) == (action, index, basis)
    assert decision.reason.startswith(reason)
    if basis == "service":
        assert decision.status.startswith(SERVICE_FALLBACK)
    if action == "advance":  # the new step counts its flagged outcomes from here
        assert decision.plan.step_flagged == outcomes[0]
        assert decision.plan.step_started_at == now


def test_abort_reason_gives_the_numbers() -> None:
    decision = judge(PLAN, 300, Counts(30, 3, 270, 0), 0, 0)
    assert decision.reason == (
        "the flag's users fail more often than the others: flagged 3 errors in 30 outcomes "
        "(10%) vs unflagged 0 in 270 (0%), e-value 433 >= 100, at step 1 of 2 (10%)"
    )


def test_only_outcomes_since_the_rollout_began_count() -> None:
    """Outcomes reported before the rollout are the baseline, not evidence."""
    plan = Plan((10, 50), 600.0, 0.05, 20, 0, 0.0, test=start_test(Counts(1000, 500, 0, 0)))
    decision = judge(plan, 300, Counts(1000, 500, 0, 0), 0, 100)
    assert (decision.action, decision.plan.basis) == ("wait", "service")


def test_the_test_accumulates_over_ticks_and_round_trips() -> None:
    """Two ticks of one flagged error each reject together; the state survives to_dict."""
    first = judge(PLAN, 100, Counts(15, 1, 135, 0), 0, 0)
    assert first.action == "wait"
    stored = Plan.from_dict(json.loads(json.dumps(first.plan.to_dict())))
    assert stored == first.plan
    second = judge(stored, 200, Counts(30, 3, 270, 0), 0, 0)
    assert second.action == "abort"


def test_a_plan_stored_before_outcomes_existed_still_loads() -> None:
    old = {
        "steps": [10, 50],
        "every": 600.0,
        "max_error_rate": 0.05,
        "min_requests": 20,
        "index": 0,
        "step_started_at": 0.0,
    }
    plan = Plan.from_dict(old)
    assert (plan.test, plan.step_flagged, plan.basis) == (None, 0, "")
    decision = judge(plan, 300, Counts(40, 4, 0, 0), 0, 0)  # the test starts from here
    assert decision.plan.test is not None
    assert decision.plan.test.seen == Counts(40, 4, 0, 0)


# ---------------------------------------------------------------- the client API


def metrics(name: str, outcomes: Any, yes: int = 0) -> dict[str, Any]:
    return {"bucket": {"toggles": {name: {"yes": yes, "no": 0, "outcomes": outcomes}}}}


def test_outcomes_in_metrics_are_stored_and_saturate(server: ServiceThread, token: str) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 50})
    auth = {"Authorization": token}
    big = 2**31 - 1
    body = metrics("checkout", {"yes": {"ok": big, "error": 1}, "no": {"error": 2}}, yes=3)
    for _ in range(2):
        assert post(f"{server.url}/client/metrics", body, auth)[0] == 202
    shown = server.call("GET", "/v1/flags/checkout")
    assert shown["outcomes"] == {
        "flagged": {"ok": 2 * big, "error": 2},
        "unflagged": {"ok": 0, "error": 4},
    }
    assert shown["usage"]["yes"] == 6
    assert server.service is not None
    store = server.service.store
    store.add_outcomes({"checkout": (2**62, 0, 0, 0)})  # totals stop at 2^62, stay integers
    assert store.outcomes("checkout") == (2**62, 2, 0, 4)
    unknown = metrics("nosuchflag", {"yes": {"error": 1}})
    assert post(f"{server.url}/client/metrics", unknown, auth)[0] == 202
    assert store.outcomes("nosuchflag") == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("outcomes", "message"),
    [
        ([], '["a"].outcomes: expected an object like'),
        ({"yes": 3}, '["a"].outcomes.yes: expected an object with ok/error counts'),
        ({"yes": {"ok": -1}}, '["a"].outcomes.yes.ok: expected a count 0..2147483647'),
        ({"no": {"error": 2**31}}, '["a"].outcomes.no.error: expected a count 0..'),
        ({"no": {"error": True}}, '["a"].outcomes.no.error: expected a count 0..'),
        ({"no": {"ok": "1"}}, '["a"].outcomes.no.ok: expected a count 0..'),
    ],
)
def test_bad_outcomes_are_400(
    server: ServiceThread, token: str, outcomes: Any, message: str
) -> None:
    server.call("POST", "/v1/flags", {"name": "a"})
    status, text = post(
        f"{server.url}/client/metrics", metrics("a", outcomes), {"Authorization": token}
    )
    assert status == 400
    assert message in json.loads(text)["error"]
    assert server.call("GET", "/v1/flags/a")["usage"] is None  # nothing of the post kept


# ---------------------------------------------------------------- the SDK


def test_sdk_reports_outcomes_with_its_metrics(server: ServiceThread, token: str) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 100})
    sdk = Client(server.url, token, app_name="shop", metrics_interval=0.2, stream=False)
    try:
        assert wait_for(lambda: sdk.is_enabled("checkout"))
        with sdk.guard("checkout", {"userId": "1"}) as enabled:
            assert enabled
        with pytest.raises(RuntimeError), sdk.guard("checkout", {"userId": "2"}):
            raise RuntimeError("the new checkout broke")
        sdk.record_outcome("checkout", enabled=False, ok=True)
        bucket, _ = sdk._pending()
        assert bucket is not None
        assert bucket["toggles"]["checkout"]["outcomes"] == {
            "yes": {"ok": 1, "error": 1},
            "no": {"ok": 1},
        }
        assert server.service is not None
        store = server.service.store
        assert wait_for(lambda: store.outcomes("checkout") == (1, 1, 1, 0))
        sdk.record_outcome("checkout", enabled=True, ok=True)
    finally:
        sdk.close()  # the last bucket goes with it
    assert store.outcomes("checkout") == (2, 1, 1, 0)


def test_sdk_without_metrics_records_nothing() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", "t", stream=False, disable_metrics=True) as sdk:
        with sdk.guard("checkout") as enabled:
            assert not enabled
        assert sdk._pending()[0] is None


# ---------------------------------------------------------------- the service


def guarded(steps: list[int], every: str = "0.3s", **extra: object) -> dict[str, object]:
    return {"steps": steps, "every": every, "max_error_rate": 0.05, "min_requests": 20, **extra}


def report(server: ServiceThread, token: str, name: str, counts: tuple[int, int, int, int]) -> None:
    ok, errors, unflagged_ok, unflagged_errors = counts
    outcomes = {
        "yes": {"ok": ok, "error": errors},
        "no": {"ok": unflagged_ok, "error": unflagged_errors},
    }
    status, _ = post(
        f"{server.url}/client/metrics", metrics(name, outcomes), {"Authorization": token}
    )
    assert status == 202


def shown(server: ServiceThread, name: str) -> dict[str, Any]:
    data: dict[str, Any] = server.call("GET", f"/v1/flags/{name}")
    return data


def test_failing_flagged_users_disable_the_flag(
    server: ServiceThread, token: str, fake_errors: FakeErrors
) -> None:
    """The service looks healthy (0 of 1000 requests failed), the flag's users do not."""
    fake_errors.requests = 1000
    server.call("POST", "/v1/flags", {"name": "checkout"})
    server.call("POST", "/v1/flags/checkout/rollout", guarded([10, 50], every="1h"))
    report(server, token, "checkout", (27, 3, 270, 0))
    assert wait_for(lambda: shown(server, "checkout")["guarded_rollout"] == "failed")
    data = shown(server, "checkout")
    assert data["enabled"] is False
    assert data["guarded"]["reason"].startswith(
        "the flag's users fail more often than the others: flagged 3 errors in 30 outcomes"
    )
    messages = [e["message"] for e in data["events"]]
    assert messages[-1] == f"disabled automatically: {data['guarded']['reason']}"
    assert data["guarded"]["plan"]["basis"] == "outcomes"
    assert "guarded rollout: judging the flag's users against the others" in " ".join(messages)


def test_healthy_flagged_users_advance_the_steps(
    server: ServiceThread, token: str, fake_errors: FakeErrors
) -> None:
    """The flag's users fail as often as the others (10%, far above --max-error-rate):
    not the flag's doing, so the rollout advances and completes."""
    fake_errors.requests = 100
    server.call("POST", "/v1/flags", {"name": "checkout"})
    report(server, token, "checkout", (0, 50, 0, 0))  # before the rollout: not evidence
    server.call("POST", "/v1/flags/checkout/rollout", guarded([10, 50, 100]))

    def done() -> bool:
        report(server, token, "checkout", (9, 1, 81, 9))  # 10% errors in both groups
        return bool(shown(server, "checkout")["guarded_rollout"] != "running")

    assert wait_for(done, timeout=60)
    data = shown(server, "checkout")
    assert (data["guarded_rollout"], data["enabled"], data["rollout"]) == ("completed", True, "100")
    messages = [e["message"] for e in data["events"]]
    assert "guarded rollout: step 3 of 3: 100%" in messages
    assert data["guarded"]["plan"]["basis"] == "outcomes"


def test_no_outcomes_fall_back_to_the_service_and_say_so(
    server: ServiceThread, fake_errors: FakeErrors
) -> None:
    fake_errors.requests = 100
    server.call("POST", "/v1/flags", {"name": "checkout"})
    server.call("POST", "/v1/flags/checkout/rollout", guarded([10, 50], every="1h"))
    assert wait_for(lambda: bool(shown(server, "checkout")["guarded"].get("judging")))
    data = shown(server, "checkout")
    assert data["guarded"]["judging"] == (
        f"{SERVICE_FALLBACK} (0 of 100 requests failed this step)"
    )
    assert f"guarded rollout: {SERVICE_FALLBACK}" in [e["message"] for e in data["events"]]
    assert ("info", f"flag checkout: guarded rollout: {SERVICE_FALLBACK}") in server.events


def test_the_test_resumes_after_a_restart(tmp_path: Path, fake_errors: FakeErrors) -> None:
    """Evidence from before a restart still counts after it: two flagged errors, then the
    agent goes away, then one more rejects (none of the three would alone)."""
    listen = f"127.0.0.1:{free_port()}"
    first = ServiceThread(tmp_path, listen, fake_errors).start()
    try:
        first.call("POST", "/v1/flags", {"name": "checkout"})
        token = str(first.call("POST", "/v1/flags-tokens", {"name": "t"})["token"])
        first.call("POST", "/v1/flags/checkout/rollout", guarded([10, 50], every="1h"))
        report(first, token, "checkout", (8, 2, 90, 0))

        def judged() -> bool:
            test = shown(first, "checkout")["guarded"]["plan"]["test"]
            return bool(test["total"] == [10, 2, 90, 0])

        assert wait_for(judged)
        e_before = shown(first, "checkout")["guarded"]["plan"]["test"]["log_lr"]
        assert shown(first, "checkout")["guarded_rollout"] == "running"
    finally:
        first.stop()
    second = ServiceThread(tmp_path, listen, fake_errors).start()
    try:
        assert shown(second, "checkout")["guarded"]["plan"]["test"]["log_lr"] == e_before
        report(second, token, "checkout", (9, 1, 90, 0))
        assert wait_for(lambda: shown(second, "checkout")["guarded_rollout"] == "failed")
        reason = shown(second, "checkout")["guarded"]["reason"]
        assert "flagged 3 errors in 20 outcomes (15%) vs unflagged 0 in 180 (0%)" in reason
    finally:
        second.stop()
