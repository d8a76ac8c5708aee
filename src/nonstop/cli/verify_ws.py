"""The WebSocket half of ``nonstop verify`` (``--websockets N``): the URL, the instances that
died during the run (whose abrupt closures are excused), and the printed report."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.table import Table
from yarl import URL

from nonstop.agent.client import AgentClient
from nonstop.errors import NonstopError, UsageError
from nonstop.loadgen.websockets import WebSocketReport

RESTARTED = re.compile(r"^instance (\S+) .*; restarting")
"""The supervisor's words for an instance whose process ended without being stopped (exited,
killed, or killed for failing its liveness probe): ``instance v2-1 killed by SIGKILL;
restarting in 1s``."""


def ws_url(target: str, path: str) -> str:
    """``http://127.0.0.1:8080/`` + ``/ws`` -> ``ws://127.0.0.1:8080/ws`` (https -> wss)."""
    if not path.startswith("/"):
        raise UsageError(f'--ws-path: expected a path starting with "/", got "{path}"')
    url = URL(target)
    scheme = "wss" if url.scheme == "https" else "ws"
    return str(url.with_scheme(scheme).with_path(path.split("?")[0]).with_query(_query(path)))


def _query(path: str) -> str:
    return path.partition("?")[2]


def died_instances(events: list[dict[str, Any]]) -> set[str]:
    """Instances the agent saw end without a stop (and restarted) in ``events``."""
    died = set()
    for event in events:
        match = RESTARTED.match(str(event.get("message", "")))
        if match:
            died.add(match.group(1))
    return died


class DeathWatch:
    """Which instances died while verify ran, from the agent of the project here (when there is
    one): the last event id before, every event after."""

    def __init__(self, client: AgentClient | None) -> None:
        self.client = client
        self.after: int | None = None

    async def begin(self) -> None:
        events = await self._events("/v1/events?limit=1")
        if events is not None:  # an agent answered: watch from its last event on
            self.after = int(events[-1]["id"]) if events else 0

    async def died(self) -> set[str]:
        if self.after is None:
            return set()
        events = await self._events(f"/v1/events?after={self.after}&limit=10000")
        return died_instances(events or [])

    async def _events(self, path: str) -> list[dict[str, Any]] | None:
        if self.client is None:
            return None
        try:
            events = await self.client.request("GET", path)
        except NonstopError:
            return None
        return events if isinstance(events, list) else None


def print_ws_report(console: Console, report: WebSocketReport) -> None:
    console.print(f"[bold]websockets[/] {report.url}: {report.clients} client(s)")
    table = Table(show_edge=False)
    table.add_column("websockets")
    table.add_column("", justify="right")
    gaps, spread = report.gap_stats(), report.spread()
    rows = [
        ("connections", str(len(report.connections))),
        ("closures", str(len(report.closed))),
        ("abrupt (no close frame)", str(len(report.abrupt))),
        ("abrupt on instances that died", str(len(report.excused))),
        ("connect failures", str(sum(report.connect_failures.values()))),
        ("disconnected p50 / p99 / max (s)", f"{gaps['p50']} / {gaps['p99']} / {gaps['max']}"),
        ("reconnects", str(spread["reconnects"])),
        ("reconnect span (s)", str(spread["span_s"])),
        ("most reconnects in 100 ms", str(spread["peak_per_100ms"])),
    ]
    for name, value in rows:
        bad = name.startswith(("abrupt (", "connect")) and value != "0"
        table.add_row(name, value, style="red" if bad else "")
    console.print(table)
    extras = {
        "close codes": report.close_codes,
        "connect failures": report.connect_failures,
        "ended on": report.ended_on,
    }
    for title, counts in extras.items():
        if counts:
            console.print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for c in report.abrupt[:10]:
        console.print(
            f"[red]abrupt[/]: client {c.client} on {c.instance or c.release} at {c.closed:.2f}s: "
            f"{c.error}"
        )
