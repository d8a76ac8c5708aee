"""``nonstop demo`` end to end (a real agent, Caddy, the sample app, load and 20 WebSocket
clients), and its WebSocket column from worked examples."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nonstop.demo.run import StepResult
from nonstop.loadgen.websockets import Connection, WebSocketReport


def report(closed_by: str, ended_on: dict[str, int]) -> WebSocketReport:
    clients = sum(ended_on.values())
    closed = [Connection(i, 0.1, closed_by, f"{closed_by}-1", 2.0, 1001) for i in range(clients)]
    return WebSocketReport(
        url="ws://x/ws",
        clients=clients,
        connections=closed,
        ended_on=ended_on,
        gaps=[],
        reconnect_times=[],
        connect_failures={},
        died=frozenset(),
    )


@pytest.mark.parametrize(
    ("ws", "serving", "expected"),
    [
        (
            report("v1", {"v2": 20}),
            "v2",
            "20 closed by v1 (1001), 0 abrupt; all 20 now on v2",
        ),
        (
            report("v1", {"v2": 17, "v1": 3}),
            "v2",
            "20 closed by v1 (1001), 0 abrupt; 17 on v2, still on v1 3 (kept warm, not yet "
            "quieted)",
        ),
    ],
)
def test_the_websocket_column_says_where_the_clients_ended(
    ws: WebSocketReport, serving: str, expected: str
) -> None:
    row = StepResult("step", True, 1.0, 10, 0, 1.0, "", ws, serving)
    assert row.ws_summary() == expected


@pytest.mark.slow
def test_the_demo_moves_every_websocket_client_to_the_release_that_serves() -> None:
    """``nonstop demo`` as ``make demo`` runs it (at 50 requests/s: the machine is shared):
    blue-green to v2, then a rollback to v1, under load with 20 WebSocket clients. It exits 0
    (no failed request, no abrupt close), and after each step every client is on the release
    that serves, moved by the kept-warm side's quiet signal at its drain deadline. The worker
    role moves too: every job enqueued during a step is done once, none lost, none twice."""
    env = {**os.environ, "COLUMNS": "240", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "nonstop.cli", "demo", "--rps", "50"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "20 closed by v1 (1001), 0 abrupt; all 20 now on v2" in rows["blue-green deploy v2"]
    assert "20 closed by v2 (1001), 0 abrupt; all 20 now on v1" in rows["rollback to v1"]
    for row in ("blue-green deploy v2", "rollback to v1"):  # the worker role's ledger
        assert " done, 0 lost, 0 twice" in rows[row], rows[row]
    assert "zero downtime" in result.stdout
