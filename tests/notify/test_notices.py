"""Notices from rollout transitions, their bodies and signatures: worked examples."""

from __future__ import annotations

import json

import pytest

from nonstop.notify import notices
from nonstop.notify.deliver import redact
from nonstop.plan.model import Finish, RolloutState

REF = notices.RolloutRef(4, "canary", "v2", "v1")


def state(phase: str, step: int = 0, *, paused: bool = False, weight: int = 0) -> RolloutState:
    return RolloutState(phase, 0.0, step, paused, {"weight": weight})


TRANSITIONS = [
    # before, after, planner events -> (kind, message, reason) of each notice
    (state("scaling"), state("scaling"), ["v2 ready (1/1)"], []),
    (
        state("scaling"),
        state("step", 0, weight=10),
        ["step 1/3: weight 10% (1 instance), pause 60s"],
        [("step_reached", "rollout 4: step 1/3: weight 10% (1 instance), pause 60s", "")],
    ),
    (
        state("step", 0, weight=10),
        state("step", 1, weight=50),
        ["pause over", "step 2/3: weight 50% (1 instance)"],
        [("step_reached", "rollout 4: step 2/3: weight 50% (1 instance)", "")],
    ),
    # a new window in the same step (a resume) is no new step
    (state("step", 1, paused=True), state("step", 1), ["resumed by operator"], []),
    (
        state("step", 1),
        state("step", 1, paused=True),
        ["paused by operator"],
        [("paused", "rollout 4 paused: paused by operator", "paused by operator")],
    ),
    (
        state("step", 1),
        state("step", 1, paused=True),
        ["analysis error_rate window inconclusive", "analysis inconclusive: 6 windows; paused"],
        [
            (
                "paused",
                "rollout 4 paused: analysis inconclusive: 6 windows; paused",
                "analysis inconclusive: 6 windows; paused",
            )
        ],
    ),
    (state("step", 1, paused=True), state("step", 1, paused=True), [], []),
    (state("step", 2), state("promoting", 2), ["promoting"], []),
]


@pytest.mark.parametrize(("before", "after", "events", "expected"), TRANSITIONS)
def test_transition_notices(
    before: RolloutState, after: RolloutState, events: list[str], expected: list[tuple[str, ...]]
) -> None:
    got = notices.transition(REF, before, after, events, 10.0)
    assert [(n.kind, n.message, n.reason) for n in got] == expected


def test_step_notice_carries_step_and_weight() -> None:
    [notice] = notices.transition(REF, state("scaling"), state("step", 1, weight=50), [], 1.0)
    assert notice.data == {"step": 2, "weight": 50}
    assert notice.message == "rollout 4: step 2 reached"


FINISHES = [
    (REF, "completed", "watched 300s", "promoted", "rollout 4 promoted v2: watched 300s"),
    (
        REF,
        "rolled_back",
        "error rate 4.1% > 2%",
        "rolled_back",
        "rollout 4 rolled back (v2): error rate 4.1% > 2%",
    ),
    (REF, "aborted", "abort requested", "rolled_back", "rollout 4 aborted (v2): abort requested"),
    (
        notices.RolloutRef(5, "bluegreen", "v1", "v2", rollback=True),
        "completed",
        "switched",
        "rolled_back",
        "rollback 5 to v1 completed: switched",
    ),
]


@pytest.mark.parametrize(("ref", "outcome", "reason", "kind", "message"), FINISHES)
def test_finished(
    ref: notices.RolloutRef, outcome: str, reason: str, kind: str, message: str
) -> None:
    notice = notices.finished(ref, Finish(outcome, reason), 0.0)  # type: ignore[arg-type]
    assert (notice.kind, notice.message, notice.reason) == (kind, message, reason)
    assert notice.data == {"outcome": outcome}


def test_started_and_flag_disabled() -> None:
    first = notices.started(notices.RolloutRef(1, "bluegreen", "v1", None), 0.0)
    assert first.message == "bluegreen rollout 1 started: nothing -> v1"
    flag = notices.flag_disabled("checkout", "error rate 5.0% at step 2 of 3", 0.0)
    body = json.loads(notices.render(flag, "shop", "json"))
    assert body["event"] == "flag_disabled"
    assert body["flag"] == "checkout"
    assert body["rollout"] is None
    assert body["reason"] == "error rate 5.0% at step 2 of 3"


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # echo -n '1700000000.{}' | openssl dgst -sha256 -hmac key
    assert notices.sign("key", "1700000000", b"{}") == (
        "sha256=" + __import__("hmac").new(b"key", b"1700000000.{}", "sha256").hexdigest()
    )


@pytest.mark.parametrize(
    ("attempt", "draw", "delay"),
    [
        (1, 0.0, 0.5),
        (1, 0.999, 0.9995),
        (2, 0.5, 1.5),
        (4, 1.0, 8.0),
        (7, 0.0, 30.0),
        (30, 1.0, 60.0),
    ],
)
def test_retry_delay_doubles_to_the_cap_with_jitter(
    attempt: int, draw: float, delay: float
) -> None:
    assert notices.retry_delay(attempt, 1.0, 60.0, draw) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("status", "retry"),
    [(500, True), (503, True), (429, True), (408, True), (404, False), (401, False)],
)
def test_retryable(status: int, retry: bool) -> None:
    assert notices.retryable(status) is retry


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/services/..."),
        ("http://user:pw@127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook"),
        ("http://127.0.0.1:9000/hook?token=abc", "http://127.0.0.1:9000/hook/..."),
        ("http://example.com", "http://example.com"),
    ],
)
def test_redact_hides_secrets_in_urls(url: str, shown: str) -> None:
    assert redact(url) == shown
