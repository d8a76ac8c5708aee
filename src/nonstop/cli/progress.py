"""Live progress of a rollout: its events as they happen, then the outcome and exit code."""

from __future__ import annotations

import time
from typing import Any

from nonstop.agent.client import AgentClient
from nonstop.cli.common import console, print_json

POLL = 0.25


def follow_rollout(agent: AgentClient, rollout_id: int, *, as_json: bool = False) -> int:
    """Print the rollout's events until it ends. 0 when it completed, 1 otherwise."""
    after = 0
    last_line = ""
    while True:
        for event in agent.call("GET", f"/v1/events?after={after}&rollout={rollout_id}"):
            after = max(after, event["id"])
            if not as_json:
                _print_event(event)
        row = agent.call("GET", f"/v1/rollouts/{rollout_id}")
        if row["status"] != "running":
            return _finish(row, as_json)
        if not as_json and console.is_terminal:
            line = _progress_line(agent)
            if line != last_line:
                console.print(f"[dim]{line}[/]")
                last_line = line
        time.sleep(POLL)


def _progress_line(agent: AgentClient) -> str:
    status = agent.call("GET", "/v1/status")
    rollout = status.get("rollout") or {}
    ready = sum(1 for i in status["instances"] if i["state"] == "ready")
    errors = ""
    measured = (rollout.get("measurements") or {}).get(rollout.get("candidate", ""), {})
    if measured.get("requests"):
        failed = measured.get("status", {}).get("5xx", 0)
        errors = f" · {rollout['candidate']} errors {failed}/{measured['requests']}"
    return (
        f"phase {rollout.get('phase', '?')} · weights {status['weights'] or 'equal'} · "
        f"{ready} ready{errors}"
    )


def _print_event(event: dict[str, Any]) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    color = {"error": "red", "warning": "yellow"}.get(event["level"], "default")
    console.print(f"{stamp} [{color}]{event['message']}[/]")


def _finish(row: dict[str, Any], as_json: bool) -> int:
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
        console.print(f"[red]{row['candidate']} {status}[/] after {took:.1f}s: {row['reason']}")
    return code
