"""The pure parts of the WebSocket holder and of verify --websockets, from worked examples."""

from __future__ import annotations

import pytest

from nonstop.cli.verify_ws import died_instances, ws_url
from nonstop.errors import UsageError
from nonstop.loadgen.websockets import (
    backoff_delay,
    peak_in_window,
    percentile,
    reconnect_hint,
)


@pytest.mark.parametrize(
    ("reason", "seconds"),
    [
        ("reconnect-after-ms=250", 0.25),
        ("going away; reconnect-after-ms=0", 0.0),
        ("", None),
        ("reconnect-after-ms=soon", None),
    ],
)
def test_reconnect_hint(reason: str, seconds: float | None) -> None:
    assert reconnect_hint(reason) == seconds


@pytest.mark.parametrize(
    ("failures", "draw", "delay"),
    [(0, 0.5, 0.25), (1, 0.5, 0.5), (3, 0.5, 2.0), (4, 1.0, 5.0), (60, 1.0, 5.0), (2, 0.0, 0.0)],
)
def test_backoff_is_full_jitter_capped(failures: int, draw: float, delay: float) -> None:
    assert backoff_delay(failures, 0.5, 5.0, lambda: draw) == delay


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.5, 0.0), ([1, 2, 3, 4], 0.5, 2), ([1, 2, 3, 4], 0.99, 4), ([7], 0.01, 7)],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize(
    ("times", "peak"),
    [([], 0), ([0, 0.05, 0.3], 2), ([0, 0.1, 0.2], 1), ([1.0] * 5, 5), ([0, 0.09, 0.099, 0.5], 3)],
)
def test_peak_in_window(times: list[float], peak: int) -> None:
    assert peak_in_window(times, 0.1) == peak


@pytest.mark.parametrize(
    ("target", "path", "expected"),
    [
        ("http://127.0.0.1:8080/", "/ws", "ws://127.0.0.1:8080/ws"),
        ("https://example.com/app", "/live?room=1", "wss://example.com/live?room=1"),
    ],
)
def test_ws_url(target: str, path: str, expected: str) -> None:
    assert ws_url(target, path) == expected


def test_ws_path_must_be_a_path() -> None:
    with pytest.raises(UsageError, match='--ws-path: expected a path starting with "/"'):
        ws_url("http://127.0.0.1:8080/", "ws")


def test_died_instances_are_the_ones_the_supervisor_restarted() -> None:
    events = [
        {"message": "instance v1-1 killed by SIGKILL; restarting in 1s"},
        {"message": "instance v1-2 exited with code 1; restarting in 2s"},
        {"message": "instance v2-1 is ready"},
        {"message": "stopped v1-3"},
        {"message": "instance v2-2 3 failed probes in a row: timeout; restarting in 1s"},
    ]
    assert died_instances(events) == {"v1-1", "v1-2", "v2-2"}
