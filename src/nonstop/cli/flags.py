"""``nonstop flags``: feature flags in the agent's store, served to Unleash SDKs."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.markup import escape
from rich.table import Table

from nonstop.cli.common import client, console, json_option, print_json
from nonstop.errors import UsageError
from nonstop.files import read_regular_file
from nonstop.flags.limits import MAX_DOCUMENT_BYTES, load_json


def _path(name: str, action: str = "") -> str:
    return f"/v1/flags/{quote(name, safe='')}{action}"


def _rollout_text(row: dict[str, Any]) -> str:
    if row["rollout"] is None:
        return f"{row['strategies']} strategies"
    return f"{row['rollout']}%"


@click.group()
def flags() -> None:
    """Feature flags: create, roll out, kill; served to Unleash SDKs on [flags] listen."""


@flags.command("list")
@json_option
def list_flags(as_json: bool) -> None:
    """List the flags."""
    rows: list[dict[str, Any]] = client().call("GET", "/v1/flags")
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no flags yet (`nonstop flags create NAME`)")
        return
    table = Table("flag", "enabled", "rollout", "variants", "guarded rollout")
    for row in rows:
        table.add_row(
            escape(row["name"]),
            "[green]on[/]" if row["enabled"] else "[red]off[/]",
            _rollout_text(row),
            str(row["variants"]),
            row["guarded_rollout"] or "-",
        )
    console.print(table)


@flags.command()
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Show a flag: definition, guarded rollout, usage and recent events."""
    data: dict[str, Any] = client().call("GET", _path(name))
    if as_json:
        print_json(data)
        return
    state = "[green]enabled[/]" if data["enabled"] else "[red]disabled[/]"
    console.print(f"[bold]{escape(data['name'])}[/]: {state}, rollout {_rollout_text(data)}")
    guarded = data.get("guarded")
    if guarded:
        plan = guarded["plan"]
        steps = ",".join(str(s) for s in plan["steps"])
        console.print(
            f"guarded rollout: {guarded['status']} at step {plan['index'] + 1} of "
            f"{len(plan['steps'])} (steps {steps}, every {plan['every']:g}s, "
            f"max error rate {plan['max_error_rate']}, min requests {plan['min_requests']})"
        )
        if guarded.get("reason"):
            console.print(f"  reason: {guarded['reason']}", markup=False)
        if guarded.get("judging"):
            console.print(f"  judging: {guarded['judging']}", markup=False)
    usage = data.get("usage")
    if usage:
        console.print(f"usage reported by SDKs: {usage['yes']} yes, {usage['no']} no")
    for event in data.get("events") or []:
        when = datetime.fromtimestamp(event["ts"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        console.print(f"  {when}  {event['level']:<7}  {event['message']}", markup=False)
    console.print_json(json.dumps(data["definition"]))


@flags.command()
@click.argument("name")
@click.option("--percent", default=0, show_default=True, type=click.IntRange(0, 100))
@click.option("--stickiness", default="default", show_default=True, help="Context field.")
@click.option("--description", default="", help="What the flag is for.")
def create(name: str, percent: int, stickiness: str, description: str) -> None:
    """Create NAME with a gradual rollout (flexibleRollout) at --percent."""
    body = {"name": name, "percent": percent, "stickiness": stickiness, "description": description}
    client().call("POST", "/v1/flags", body)
    console.print(f"created {escape(name)}: enabled, rollout {percent}%")


@flags.command()
@click.argument("name")
def enable(name: str) -> None:
    """Switch NAME on (its strategies decide who sees it)."""
    client().call("POST", _path(name, "/enable"))
    console.print(f"{escape(name)} enabled")


@flags.command()
@click.argument("name")
def disable(name: str) -> None:
    """Kill switch: NAME is off for everyone at the SDKs' next refresh (at once when streaming)."""
    client().call("POST", _path(name, "/disable"))
    console.print(f"{escape(name)} disabled")


def _steps(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise UsageError(
            f"--steps: expected percentages such as 1,5,25,50,100, got {value!r}"
        ) from None


@flags.command()
@click.argument("name")
@click.option("--percent", type=click.IntRange(0, 100), help="Set the percentage now.")
@click.option("--steps", help="Guarded rollout: percentages, e.g. 1,5,25,50,100.")
@click.option("--every", default="10m", show_default=True, help="Time at each step.")
@click.option("--max-error-rate", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--min-requests", type=click.IntRange(0), default=20, show_default=True)
@click.option("--stop", is_flag=True, help="Stop a guarded rollout where it is.")
def rollout(
    name: str,
    percent: int | None,
    steps: str | None,
    every: str,
    max_error_rate: float,
    min_requests: int,
    stop: bool,
) -> None:
    """Set NAME's rollout percentage, or move it step by step with guard rails.

    With --steps the agent moves the percentage every --every, and disables the flag
    when the service's error rate during a step passes --max-error-rate (once at least
    --min-requests were seen). It survives an agent restart."""
    chosen = [
        opt
        for opt, given in (("--percent", percent is not None), ("--steps", steps), ("--stop", stop))
        if given
    ]
    if len(chosen) != 1:
        raise UsageError("flags rollout: give exactly one of --percent N, --steps LIST, --stop")
    agent = client()
    if stop:
        agent.call("POST", _path(name, "/rollout"), {"stop": True})
        console.print(f"guarded rollout of {escape(name)} stopped; the percentage stays as it is")
    elif percent is not None:
        agent.call("POST", _path(name, "/rollout"), {"percent": percent})
        console.print(f"{escape(name)}: rollout {percent}%")
    else:
        body = {
            "steps": _steps(steps),
            "every": every,
            "max_error_rate": max_error_rate,
            "min_requests": min_requests,
        }
        agent.call("POST", _path(name, "/rollout"), body)
        console.print(
            f"{escape(name)}: guarded rollout started ({steps}, every {every}); "
            f"`nonstop flags show {escape(name)}` follows it"
        )


@flags.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete NAME (SDKs then give their default for it)."""
    client().call("DELETE", _path(name))
    console.print(f"{escape(name)} deleted")


@flags.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
def import_flags(file: Path) -> None:
    """Replace every flag with FILE (Unleash client features JSON; - for stdin).

    The whole document is checked first; a bad one changes nothing."""
    data = sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1) if str(file) == "-" else _read(file)
    document = load_json(data, str(file))
    if not isinstance(document, dict):
        raise UsageError(f'{file}: expected a JSON object with "features"')
    result = client().call("PUT", "/v1/flags-document", {"document": document})
    console.print(f"imported {result['imported']} flags (revision {result['revision']})")


def _read(file: Path) -> bytes:
    return read_regular_file(file, MAX_DOCUMENT_BYTES, "flags document")


@flags.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def export_flags(file: Path | None) -> None:
    """Write every flag as Unleash client features JSON (to FILE, or stdout)."""
    document = client().call("GET", "/v1/flags-document")
    text = json.dumps(document, indent=2) + "\n"
    if file is None:
        click.echo(text, nl=False)
    else:
        file.write_text(text)
        console.print(f"wrote {len(document['features'])} flags to {file}")


@flags.group()
def token() -> None:
    """Client tokens for SDKs (sent as `Authorization: <token>`)."""


@token.command("create")
@click.option("--name", default="default", show_default=True, help="What the token is for.")
def token_create(name: str) -> None:
    """Create a client token; it is printed once and stored only as a hash."""
    data = client().call("POST", "/v1/flags-tokens", {"name": name})
    click.echo(data["token"])


@token.command("list")
@json_option
def token_list(as_json: bool) -> None:
    """List client tokens (names and dates; the tokens themselves are not kept)."""
    rows: list[dict[str, Any]] = client().call("GET", "/v1/flags-tokens")
    if as_json:
        print_json(rows)
        return
    table = Table("id", "name", "created")
    for row in rows:
        created = datetime.fromtimestamp(row["created_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(row["id"]), escape(row["name"]), created)
    console.print(table)
