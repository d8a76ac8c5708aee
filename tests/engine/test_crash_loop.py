"""An instance that keeps dying after readiness is crash-looping: failed and not ready."""

from __future__ import annotations

import pytest

from nonstop.engine.instances import Live

T0 = 1_000.0
LOOPING = "crash-looping: restarted 3 times within 120s; last: exited with code 1"


@pytest.mark.parametrize(
    ("restarted_at", "now", "expected"),
    [
        ([], T0, None),
        ([T0 + 1.3, T0 + 3.6], T0 + 4, None),  # two restarts: a bad minute, not yet a loop
        ([T0 + 1.3, T0 + 3.6, T0 + 7.9], T0 + 8, LOOPING),  # backoff 1 s, 2 s, 4 s
        ([T0 + 1.3, T0 + 3.6, T0 + 7.9], T0 + 122, None),  # up for a whole window since: fine
        ([T0, T0 + 50, T0 + 100, T0 + 150], T0 + 151, LOOPING),  # 3 within the last 120 s
    ],
)
def test_crash_loop(restarted_at: list[float], now: float, expected: str | None) -> None:
    live = Live("v7-1", "v7", None, "ready", restarted_at=restarted_at)
    live.last_exit = "exited with code 1"
    assert live.crash_loop(now, 3, 120.0) == expected


def test_a_crash_looping_instance_is_failed_and_not_ready_even_between_crashes() -> None:
    live = Live("v7-1", "v7", None, "ready")
    view = live.view(LOOPING)
    assert (view.ready, view.failed) == (False, LOOPING)
    assert live.view().ready
    draining = Live("v7-2", "v7", None, "draining")
    assert draining.view(LOOPING).failed is None, "one that is leaving holds nothing up"
