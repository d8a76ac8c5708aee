"""What is worth telling a person about a rollout, and how a webhook says it. Pure: no I/O,
no clock (times come in as arguments).

A *notice* is derived from a rollout's transition, not parsed from event text:

=================  =================================================================
rollout_started    a rollout (or a rollback) began
step_reached       a canary step began (``phase`` became ``step``, or its index moved)
paused             ``paused`` went from false to true; the reason is the planner's sentence
promoted           the rollout completed (not a rollback)
rolled_back        the rollout ended rolled back or aborted (the verdict's reason), or a
                   rollback completed
flag_disabled      a guarded flag rollout disabled its flag
=================  =================================================================

Worked example: a canary's decide() moves ``{phase: scaling, step: 1}`` to
``{phase: step, step: 1}`` with the event "step 2/3: weight 50% (1 instance)": one
``step_reached`` notice, step 2, weight 50, message "step 2/3: weight 50% (1 instance)".
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nonstop.plan.model import Finish, RolloutSpec, RolloutState

STEP_PHASE = "step"


@dataclass(frozen=True)
class RolloutRef:
    """Which rollout a notice is about."""

    id: int
    strategy: str
    candidate: str
    stable: str | None
    rollback: bool = False

    @classmethod
    def of(cls, rollout_id: int, spec: RolloutSpec) -> RolloutRef:
        return cls(rollout_id, spec.strategy, spec.candidate, spec.stable, spec.rollback)


@dataclass(frozen=True)
class Notice:
    kind: str
    message: str
    at: float
    rollout: RolloutRef | None = None
    reason: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self, app: str) -> dict[str, Any]:
        """The generic JSON body."""
        stamp = datetime.datetime.fromtimestamp(self.at, datetime.UTC)
        body: dict[str, Any] = {
            "event": self.kind,
            "app": app,
            "message": self.message,
            "reason": self.reason or None,
            "at": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "rollout": None,
            **dict(self.data),
        }
        if self.rollout is not None:
            ref = self.rollout
            body["rollout"] = {
                "id": ref.id,
                "strategy": ref.strategy,
                "candidate": ref.candidate,
                "stable": ref.stable,
                "rollback": ref.rollback,
            }
        return body


def started(ref: RolloutRef, at: float) -> Notice:
    verb = "rollback" if ref.rollback else f"{ref.strategy} rollout"
    message = f"{verb} {ref.id} started: {ref.stable or 'nothing'} -> {ref.candidate}"
    return Notice("rollout_started", message, at, ref)


def transition(
    ref: RolloutRef,
    before: RolloutState,
    after: RolloutState,
    events: Sequence[str],
    at: float,
) -> list[Notice]:
    """Notices for one decide(): a step reached and/or a pause, from the states themselves."""
    notices = []
    if after.phase == STEP_PHASE and (before.phase != STEP_PHASE or before.step != after.step):
        headline = next((e for e in events if e.startswith(f"step {after.step + 1}/")), "")
        data = {"step": after.step + 1, "weight": after.data.get("weight")}
        message = headline or f"step {after.step + 1} reached"
        notices.append(Notice("step_reached", f"rollout {ref.id}: {message}", at, ref, "", data))
    if after.paused and not before.paused:
        reason = next((e for e in reversed(events) if "pause" in e), events[-1] if events else "")
        message = f"rollout {ref.id} paused: {reason or 'no reason given'}"
        data = {"step": after.step + 1}
        notices.append(Notice("paused", message, at, ref, reason, data))
    return notices


def finished(ref: RolloutRef, finish: Finish, at: float) -> Notice:
    """``promoted`` for a completed rollout, ``rolled_back`` for every other end."""
    outcome = finish.outcome.replace("_", " ")
    if finish.outcome == "completed" and not ref.rollback:
        message = f"rollout {ref.id} promoted {ref.candidate}: {finish.reason}"
        return Notice("promoted", message, at, ref, finish.reason, {"outcome": finish.outcome})
    if finish.outcome == "completed":
        message = f"rollback {ref.id} to {ref.candidate} completed: {finish.reason}"
    else:
        message = f"rollout {ref.id} {outcome} ({ref.candidate}): {finish.reason}"
    return Notice("rolled_back", message, at, ref, finish.reason, {"outcome": finish.outcome})


def test(app: str, at: float) -> Notice:
    return Notice("test", f"a test notice from nonstop for {app}: this receiver works", at)


def flag_disabled(flag: str, reason: str, at: float) -> Notice:
    message = f"flag {flag} disabled by its guarded rollout: {reason}"
    return Notice("flag_disabled", message, at, None, reason, {"flag": flag})


EMOJI = {
    "rollout_started": ":rocket:",
    "step_reached": ":arrow_forward:",
    "paused": ":double_vertical_bar:",
    "promoted": ":white_check_mark:",
    "rolled_back": ":rotating_light:",
    "flag_disabled": ":triangular_flag_on_post:",
    "test": ":wave:",
}


def render(notice: Notice, app: str, fmt: str) -> bytes:
    """The request body: the generic JSON, or Slack's ``{"text": ...}`` (also understood by
    Mattermost, Rocket.Chat and Discord's /slack endpoints)."""
    if fmt == "slack":
        text = f"{EMOJI.get(notice.kind, '')} *{app}*: {notice.message}".strip()
        return json.dumps({"text": text}).encode()
    return json.dumps(notice.to_dict(app)).encode()


SIGNATURE_HEADER = "X-Nonstop-Signature"
TIMESTAMP_HEADER = "X-Nonstop-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "TIMESTAMP.BODY">``: the timestamp is signed too, so a
    receiver can refuse old replays."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def retry_delay(attempt: int, base: float, cap: float, draw: float) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): exponential, capped, with "equal jitter"
    (half fixed, half drawn) so many agents do not hammer a recovering receiver in step.
    ``draw`` is a uniform number in [0, 1).

    >>> [retry_delay(n, 1.0, 60.0, draw) for n, draw in ((1, 0.0), (3, 0.5), (9, 0.0))]
    [0.5, 3.0, 30.0]
    """
    delay: float = min(cap, base * 2.0 ** (attempt - 1))
    return delay / 2 + delay / 2 * draw


def retryable(status: int) -> bool:
    """A 5xx, 408 or 429 may succeed later; any other 4xx will not (a wrong URL or token)."""
    return status >= 500 or status in (408, 429)
