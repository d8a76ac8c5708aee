"""Live progress of a rollout: its events as they happen, then the outcome and exit code.

Following survives an agent restart: while the agent does not answer, the CLI says so once and
reconnects with backoff for up to RECONNECT seconds, then goes on following the same rollout
(its id and events are in the store), so the exit code is the rollout's real outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nonstop.agent.client import AgentClient
from nonstop.cli.common import console, err_console, print_json
from nonstop.errors import AgentUnavailable

POLL = 0.25
RECONNECT = 120.0
"""Seconds to keep reconnecting to a restarting agent before giving up (exit 1)."""


class Reconnecting:
    """Calls to the agent that wait out a restart: AgentUnavailable is retried with backoff
    until ``budget`` seconds have passed without one success."""

    def __init__(
        self,
        agent: AgentClient,
        budget: float = RECONNECT,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.agent = agent
        self.budget = budget
        self.say = say or (lambda text: err_console.print(f"[yellow]{text}[/]"))

    def call(self, method: str, path: str) -> Any:
        down_since: float | None = None
        delay = 0.1
        while True:
            try:
                data = self.agent.call(method, path)
            except AgentUnavailable:
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    self.say("agent restarting, reconnecting...")
                elif now - down_since >= self.budget:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if down_since is not None:
                self.say("reconnected to the agent")
            return data


def follow_rollout(agent: AgentClient, rollout_id: int, *, as_json: bool = False) -> int:
    """Print the rollout's events until it ends. 0 when it completed, 1 otherwise."""
    calls = Reconnecting(agent)
    after = 0
    last_line = ""
    shown: set[str] = set()
    while True:
        for event in calls.call("GET", f"/v1/events?after={after}&rollout={rollout_id}"):
            after = max(after, event["id"])
            if not as_json:
                _print_event(event, shown)
        row = calls.call("GET", f"/v1/rollouts/{rollout_id}")
        if row["status"] != "running":
            return _finish(row, as_json, shown)
        if not as_json and console.is_terminal:
            line = _progress_line(calls)
            if line != last_line:
                console.print(f"[dim]{line}[/]")
                last_line = line
        time.sleep(POLL)


def _progress_line(calls: Reconnecting) -> str:
    status = calls.call("GET", "/v1/status")
    rollout = status.get("rollout") or {}
    ready = _ready_by_role(status["instances"])
    errors = ""
    measured = (rollout.get("measurements") or {}).get(rollout.get("candidate", ""), {})
    if measured.get("requests"):
        failed = measured.get("status", {}).get("5xx", 0)
        errors = f" · {rollout['candidate']} errors {failed}/{measured['requests']}"
    return (
        f"phase {rollout.get('phase', '?')} · weights {status['weights'] or 'equal'} · "
        f"{ready}{errors}"
    )


def _ready_by_role(instances: list[dict[str, Any]]) -> str:
    """ "3 ready" for the web role, then "worker 2 ready" for each other role that has some.

    >>> _ready_by_role([{"state": "ready"}, {"state": "ready", "role": "worker"}])
    '1 ready · worker 1 ready'
    """
    counts: dict[str, int] = {"web": 0}
    for instance in instances:
        role = instance.get("role", "web")
        counts[role] = counts.get(role, 0) + (instance["state"] == "ready")
    others = [f" · {role} {n} ready" for role, n in sorted(counts.items()) if role != "web"]
    return f"{counts['web']} ready" + "".join(others)


def _print_event(event: dict[str, Any], shown: set[str]) -> None:
    """One line per event; a reason already printed (an instance's failure, repeated by the
    rollout that aborts on it) is named once, not again."""
    message = _once(event["message"], shown)
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    color = {"error": "red", "warning": "yellow"}.get(event["level"], "default")
    console.print(f"{stamp} [{color}]{message}[/]", markup=True)


def _once(message: str, shown: set[str]) -> str:
    """``message`` with any reason already in ``shown`` replaced by "(see above)"; the
    reasons it carries are remembered."""
    for reason in sorted(shown, key=len, reverse=True):
        if reason and reason in message and reason != message:
            message = message.replace(reason, "(see above)")
    _head, sep, reason = message.partition(": ")
    if sep and len(reason) > 20:
        shown.add(reason)
    return message


def _finish(row: dict[str, Any], as_json: bool, shown: set[str]) -> int:
    code = 0 if row["status"] == "completed" else 1
    if as_json:
        print_json({k: v for k, v in row.items() if k not in ("journal", "events")})
        return code
    took = (row["finished_at"] or time.time()) - row["started_at"]
    if row["rollback"] and code == 0:
        console.print(f"[green]rolled back to {row['candidate']}[/] in {took:.1f}s")
    elif code == 0:
        console.print(f"[green]{row['candidate']} deployed[/] in {took:.1f}s")
    else:
        status = row["status"].replace("_", " ")
        reason = _once(str(row["reason"] or ""), shown) if row["reason"] else "no reason recorded"
        console.print(f"[red]{row['candidate']} {status}[/] after {took:.1f}s: {reason}")
    return code
