"""Guarded gradual rollout of one flag: a pure decision from the plan, the time, the
outcomes the SDKs reported for the flag and (as a fallback) the service's error counts. The
service acts on it and stores the new plan before acting (progress is data that survives a
restart).

Judging the flagged users (`judge`, decision 0380)
--------------------------------------------------
Applications report the outcome of work done under an evaluation of the flag (ok or error,
with the evaluation's answer). The flagged group (outcomes with ``enabled=true``) plays the
canary of the project's sequential test (`nonstop.analysis.sequential`, decision 0140), the
unflagged group (``enabled=false``) the stable release: the test asks whether an error is
the flagged group's more often than the flagged share of the outcomes explains. Cumulative
outcome totals come in at every tick; the test's state (with the totals it has seen) lives
in the plan, so a restart resumes it without counting anything twice.

- the test rejects -> abort (the flag is disabled), whatever the step's age;
- the step's time passed and the step has ``min_requests`` flagged outcomes -> advance
  (complete at the last step);
- otherwise wait (a step whose flagged users report nothing never advances blind);
- no outcome reported since the rollout began -> `decide` on the service's error rate, and
  the plan says so (``basis = "service"``).

Worked examples of `judge` (steps 10,50; every 600 s; min 20 flagged outcomes; counts are
cumulative (flagged, flagged errors, unflagged, unflagged errors), the test started at 0s):

- t=300, (30, 3, 270, 0) -> abort: 3 flagged errors, none unflagged, at a 10% share
  (e-value 433 >= 100)
- t=300, (30, 0, 270, 3) -> wait (the flag's users fail less than the others)
- t=700, (30, 1, 270, 9) -> advance to 50% (1 of 30 vs 9 of 270: the same rate)
- t=700, (10, 0, 90, 0) -> wait: 10 of 20 flagged outcomes at this step
- t=700, (0, 0, 0, 0) and 0 of 100 service requests failed -> advance on the service's rate

Judging the service (`decide`)
------------------------------
Worked examples (steps 1,5,25; every 600 s; max error rate 0.05; min requests 20):

- step 0 began at t=1000, now t=1300, 3 errors in 100 requests -> wait (3% <= 5%, 300 s < 600 s)
- step 0 began at t=1000, now t=1600, 0 errors in 10 requests -> advance to step 1 (5%)
- step 1, 6 errors in 100 requests -> abort: "error rate 6.0% (6 of 100 requests) is above
  5.0% at step 2 of 3 (5%)"; the flag gets disabled
- step 1, 5 errors in 10 requests -> wait: 10 < 20 requests is too few to judge
- step 2 (the last) began 600 s ago -> complete (25% stays)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from nonstop.analysis.sequential import Counts, SequentialRun, new_sequential, observe
from nonstop.analysis.verdict import num
from nonstop.errors import UsageError

DEFAULT_MAX_ERROR_RATE = 0.05
DEFAULT_MIN_REQUESTS = 20


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[int, ...]
    every: float
    max_error_rate: float | None
    min_requests: int
    index: int
    step_started_at: float
    test: SequentialRun | None = None
    """The sequential test on the flag's reported outcomes (None: not started yet)."""
    step_flagged: int = 0
    """Cumulative flagged outcomes when the current step began."""
    basis: Literal["outcomes", "service", ""] = ""
    """What the last tick judged: the flag's outcomes, or the service's error rate."""

    @property
    def percent(self) -> int:
        return self.steps[self.index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "every": self.every,
            "max_error_rate": self.max_error_rate,
            "min_requests": self.min_requests,
            "index": self.index,
            "step_started_at": self.step_started_at,
            "test": None if self.test is None else self.test.to_dict(),
            "step_flagged": self.step_flagged,
            "basis": self.basis,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            steps=tuple(int(s) for s in data["steps"]),
            every=float(data["every"]),
            max_error_rate=(
                None if data.get("max_error_rate") is None else float(data["max_error_rate"])
            ),
            min_requests=int(data["min_requests"]),
            index=int(data["index"]),
            step_started_at=float(data["step_started_at"]),
            test=None if data.get("test") is None else SequentialRun.from_dict(data["test"]),
            step_flagged=int(data.get("step_flagged", 0)),
            basis=_basis(data.get("basis")),
        )


def _basis(value: object) -> Literal["outcomes", "service", ""]:
    if value == "outcomes":
        return "outcomes"
    if value == "service":
        return "service"
    return ""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["wait", "advance", "complete", "abort"]
    plan: Plan
    reason: str = ""
    status: str = ""
    """What is being judged and how it stands, for `nonstop flags show` (any action)."""


def new_plan(
    steps: Sequence[int],
    every: float,
    max_error_rate: float | None,
    min_requests: int,
    now: float,
) -> Plan:
    """Check the user's numbers and start at step 0."""
    if not steps:
        raise UsageError("--steps: expected percentages such as 1,5,25,50,100")
    for i, step in enumerate(steps):
        if not 0 <= step <= 100:
            raise UsageError(f"--steps[{i}]: expected a percentage 0..100, got {step}")
        if i and step <= steps[i - 1]:
            raise UsageError(f"--steps[{i}]: steps must increase, got {steps[i - 1]} then {step}")
    if every <= 0:
        raise UsageError("--every: expected a positive duration such as 10m")
    if max_error_rate is not None and not 0 <= max_error_rate <= 1:
        raise UsageError(f"--max-error-rate: expected 0..1, got {max_error_rate}")
    if min_requests < 0:
        raise UsageError(f"--min-requests: expected 0 or more, got {min_requests}")
    return Plan(tuple(steps), every, max_error_rate, min_requests, 0, now)


def decide(plan: Plan, now: float, errors: int, requests: int) -> Decision:
    """What to do now, given ``errors`` of ``requests`` since ``plan.step_started_at``."""
    limit = plan.max_error_rate
    if limit is not None and requests >= max(plan.min_requests, 1) and errors / requests > limit:
        return Decision("abort", plan, _abort_reason(plan, errors, requests, limit))
    if now < plan.step_started_at + plan.every:
        return Decision("wait", plan)
    if plan.index + 1 >= len(plan.steps):
        return Decision("complete", plan, f"rollout complete at {plan.percent}%")
    nxt = replace(plan, index=plan.index + 1, step_started_at=now)
    return Decision("advance", nxt, f"step {nxt.index + 1} of {len(plan.steps)}: {nxt.percent}%")


def _abort_reason(plan: Plan, errors: int, requests: int, limit: float) -> str:
    rate = errors / requests
    return (
        f"error rate {rate:.1%} ({errors} of {requests} requests) is above {limit:.1%} "
        f"at step {plan.index + 1} of {len(plan.steps)} ({plan.percent}%)"
    )


SERVICE_FALLBACK = "no per-flag outcomes reported: judging the service's error rate"


def start_test(outcomes: Counts) -> SequentialRun:
    """A fresh test whose baseline is the flag's cumulative outcome totals now: only
    outcomes reported after the rollout began are judged."""
    return replace(new_sequential(), seen=outcomes)


def judge(plan: Plan, now: float, outcomes: Counts, errors: int, requests: int) -> Decision:
    """What to do now, given the flag's cumulative ``outcomes`` (flagged as the canary,
    unflagged as the stable release) and the service's ``errors`` of ``requests`` since the
    step began (used only while no outcome was reported since the rollout began)."""
    test = plan.test if plan.test is not None else start_test(outcomes)
    test, verdict = observe(test, outcomes, label="flagged vs unflagged")
    plan = replace(plan, test=test)
    seen = test.total
    if seen.canary_requests + seen.stable_requests == 0:
        decision = decide(replace(plan, basis="service"), now, errors, requests)
        status = f"{SERVICE_FALLBACK} ({errors} of {requests} requests failed this step)"
        return _stepped(replace(decision, status=status), test)
    plan = replace(plan, basis="outcomes")
    counts = _counts(seen)
    if verdict.outcome == "fail":
        reason = (
            f"the flag's users fail more often than the others: {counts}, e-value "
            f"{num(test.e_value)} >= {num(test.threshold)}, at step {plan.index + 1} of "
            f"{len(plan.steps)} ({plan.percent}%)"
        )
        return Decision("abort", plan, reason, reason)
    flagged = max(0, test.seen.canary_requests - plan.step_flagged)
    status = (
        f"judging the flag's users against the others: {counts}, e-value "
        f"{num(test.e_value)} < {num(test.threshold)}; {flagged} flagged outcomes this step"
    )
    if now < plan.step_started_at + plan.every:
        return Decision("wait", plan, status=status)
    if flagged < plan.min_requests:
        return Decision(
            "wait", plan, status=f"{status}, waiting for {plan.min_requests} to move on"
        )
    return _stepped(replace(decide(plan, now, 0, 0), status=status), test)


def _stepped(decision: Decision, test: SequentialRun) -> Decision:
    """An advance starts counting the new step's flagged outcomes from here."""
    if decision.action != "advance":
        return decision
    return replace(decision, plan=replace(decision.plan, step_flagged=test.seen.canary_requests))


def _counts(total: Counts) -> str:
    def rate(errors: int, n: int) -> str:
        return f"{num(100 * errors / n)}%" if n else "n/a"

    return (
        f"flagged {total.canary_errors} errors in {total.canary_requests} outcomes "
        f"({rate(total.canary_errors, total.canary_requests)}) vs unflagged "
        f"{total.stable_errors} in {total.stable_requests} "
        f"({rate(total.stable_errors, total.stable_requests)})"
    )
