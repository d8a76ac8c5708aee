"""Guarded gradual rollout of one flag: a pure decision from the plan, the time and the
service's error counts since the current step began. The service acts on it and stores
the new plan before acting (progress is data that survives a restart).

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
        )


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["wait", "advance", "complete", "abort"]
    plan: Plan
    reason: str = ""


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
