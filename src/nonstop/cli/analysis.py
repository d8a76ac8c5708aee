"""``nonstop analysis explain``: why a rollout promoted, paused or rolled back.

The agent builds the data from the rollout's stored state (GET /v1/analysis); this module only
prints it: one table per analysis (the background checks, the step's checks) with each check's
samples, value, threshold, verdict and reason, then the sequential test's state and the final
reason. ``--history`` lists every judged window instead of each check's standing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click
from rich.table import Table

from nonstop.analysis.explain import COLUMNS
from nonstop.analysis.verdict import num
from nonstop.cli.common import client, console, json_option, print_json

STYLE = {"pass": "green", "fail": "red", "inconclusive": "yellow", "pending": "dim"}


@click.group()
def analysis() -> None:
    """Look into rollout analysis."""


@analysis.command()
@click.option("--rollout", "rollout_id", type=int, help="Rollout ID (default: current or last).")
@click.option("--history", is_flag=True, help="Every judged window, not each check's standing.")
@json_option
def explain(rollout_id: int | None, history: bool, as_json: bool) -> None:
    """Each check's samples, values, thresholds and verdicts, and the final reason."""
    query = "" if rollout_id is None else f"?rollout={rollout_id}"
    data = client().call("GET", f"/v1/analysis{query}")
    if as_json:
        print_json(data)
        return
    render(data, history=history)


def render(data: Mapping[str, Any], *, history: bool = False) -> None:
    rollout = data["rollout"]
    stable = rollout.get("stable") or "nothing"
    status = str(rollout["status"]).replace("_", " ")
    where = f", phase {data.get('phase')} of step {data['step'] + 1}" if status == "running" else ""
    console.print(
        f"[bold]rollout {rollout['id']}[/bold] ({rollout['strategy']} {stable} -> "
        f"{rollout['candidate']}): {status}{where}"
    )
    analyses: Sequence[Mapping[str, Any]] = data.get("analyses", ())
    if not analyses and data.get("sequential") is None:
        console.print("no analysis ran in this rollout")
    for run in analyses:
        verdict = run["verdict"]
        console.print(
            f"\n[bold]{run['name']} analysis[/bold]: {run['phase']}, verdict "
            f"{_verdict(verdict['outcome'])}: {verdict['reason']}"
        )
        console.print(_table(run["history"] if history else run["rows"]))
    sequential = data.get("sequential")
    if sequential is not None:
        console.print(f"\n[bold]sequential test[/bold]: {_sequential(sequential)}")
    if data.get("reason"):
        console.print(f"\n[bold]reason[/bold]: {data['reason']}")


def _table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(*COLUMNS)
    for row in rows:
        value = "-" if row["value"] is None else f"{num(float(row['value']))}{row['unit']}"
        table.add_row(
            str(row["check"]),
            str(row["samples"]),
            value,
            str(row["threshold"]),
            _verdict(str(row["verdict"])),
            str(row["reason"]),
        )
    return table


def _verdict(outcome: str) -> str:
    style = STYLE.get(outcome)
    return f"[{style}]{outcome}[/{style}]" if style else outcome


def _sequential(data: Mapping[str, Any]) -> str:
    """``e-value 433 (rejects at 100, alpha 0.01): canary 3/60 errors, stable 0/540``."""
    canary, stable = data["canary"], data["stable"]
    state = "rejected the canary" if data["rejected"] else "not rejected"
    return (
        f"e-value {num(float(data['e_value']))} (rejects at {num(float(data['threshold']))}, "
        f"alpha {num(float(data['alpha']))}), {state}: canary {canary['errors']}/"
        f"{canary['requests']} errors, stable {stable['errors']}/{stable['requests']}; "
        f"last: {data['row']['reason']}"
    )
