"""/metrics inputs: measured weights (each release's share of the last 10 whole seconds) and
the finished rollouts counted from the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.agent.metrics import measured_shares
from nonstop.drivers.metrics import RequestStats
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream
from nonstop.store import open_store

V1, V2 = "127.0.0.1:9001", "127.0.0.1:9002"

# (events as (ts, upstream) at now = 1000.5) -> shares in percent
CASES = [
    ([], {}),
    ([(995.0, V1)] * 3 + [(996.2, V2)], {"v1": 75.0, "v2": 25.0}),
    # the current, unfinished second (1000) and anything before second 990 are left out
    ([(1000.1, V2), (989.9, V2), (990.0, V1)], {"v1": 100.0}),
    ([(999.9, V1), (999.9, V2)], {"v1": 50.0, "v2": 50.0}),
]


@pytest.mark.parametrize(("events", "shares"), CASES)
def test_measured_shares(events: list[tuple[float, str]], shares: dict[str, float]) -> None:
    stats = RequestStats()
    stats.observe_table(RouteTable((Upstream("a", "v1", V1, 50), Upstream("b", "v2", V2, 50))))
    for ts, upstream in events:
        stats.record(RequestEvent(ts, upstream, 200, 1.0))
    assert measured_shares(stats, 1000.5) == shares
    assert sum(stats.counts(990, 1000).values()) == sum(
        stats.snapshot(r, 990, 1000).requests for r in stats.releases()
    )


def test_rollout_counts_are_the_finished_rollouts(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        for strategy, rollback, outcome in [
            ("canary", False, "completed"),
            ("canary", False, "rolled_back"),
            ("canary", False, "completed"),
            ("bluegreen", True, "completed"),
            ("rolling", False, None),  # still running: not counted
        ]:
            row = store.start_rollout(strategy, "v2", "v1", STATE, rollback=rollback)
            if outcome is not None:
                store.finish_rollout(row.id, outcome, "because")
        assert store.rollout_counts() == [
            ("bluegreen", True, "completed", 1),
            ("canary", False, "completed", 2),
            ("canary", False, "rolled_back", 1),
        ]
    finally:
        store.close()


STATE = {"phase": "starting", "phase_started_at": 0.0}
