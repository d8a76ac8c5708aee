"""Every response the router sends while a release should serve is charged to that release;
a window the request stream cannot have seen whole is never complete. Worked examples."""

from __future__ import annotations

import pytest

from nonstop.analysis.measurement import Measurement
from nonstop.drivers.metrics import UNROUTED, RequestStats
from nonstop.drivers.metrics.request_stats import MAX_WINDOW
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream

A = "127.0.0.1:9001"
T0 = 1_000.0


def stats(window: int = 900, started: float = T0) -> RequestStats:
    s = RequestStats(window=window, clock=lambda: started)
    s.observe_table(RouteTable((Upstream("v1-1", "v1", A, 1),)))
    return s


def refused(ts: float, upstream: str | None = None) -> RequestEvent:
    return RequestEvent(ts, upstream, 503 if upstream is None else 502, 0.1, proxy_error=True)


def count(s: RequestStats, release: str) -> int:
    return s.snapshot(release, T0, T0 + 100).requests


@pytest.mark.parametrize(
    ("weights", "n", "expected"),
    [
        # nobody is meant to serve (before the first switch): the router's own 503s are nobody's
        (None, 4, {UNROUTED: 4}),
        ({}, 2, {UNROUTED: 2}),
        # one release meant to serve, no instance left (all crashed): every 503 is its own
        ({"v7": 100}, 5, {"v7": 5, UNROUTED: 0}),
        # weighted: smooth weighted round robin, exact over any run of 100 / gcd picks
        ({"v1": 75, "v2": 25}, 4, {"v1": 3, "v2": 1}),
        ({"v1": 75, "v2": 25}, 400, {"v1": 300, "v2": 100}),
        ({"v1": 90, "v2": 10}, 10, {"v1": 9, "v2": 1}),
        ({"v1": 50, "v2": 50}, 3, {"v1": 2, "v2": 1}),  # a tie goes to the first name
        ({"v1": 100, "v2": 0}, 3, {"v1": 3, "v2": 0}),  # a 0 weight is never charged
    ],
)
def test_requests_no_upstream_answered_are_charged_to_the_releases_meant_to_serve(
    weights: dict[str, int] | None, n: int, expected: dict[str, int]
) -> None:
    s = stats()
    s.observe_weights(weights)
    for i in range(n):
        s.record(refused(T0 + 1 + i * 0.01))
    assert {release: count(s, release) for release in expected} == expected


def test_weighted_charging_is_deterministic_and_interleaved() -> None:
    """v1, v1, v2, v1: never three to one in a lump, and the same every time."""
    picks = []
    for _ in range(2):
        s = stats()
        s.observe_weights({"v1": 75, "v2": 25})
        order = []
        for i in range(8):
            s.record(refused(T0 + 1 + i))
            order.append("v1" if count(s, "v1") > order.count("v1") else "v2")
        picks.append(order)
    assert picks[0] == picks[1] == ["v1", "v1", "v2", "v1"] * 2


def test_a_named_upstream_keeps_its_own_release_whatever_the_weights() -> None:
    """A dial refused by v1's address is v1's even while the weights say v7."""
    s = stats()
    s.observe_weights({"v7": 100})
    s.record(refused(T0 + 1, upstream=A))
    assert (count(s, "v1"), count(s, "v7")) == (1, 0)
    m = s.snapshot("v1", T0, T0 + 10)
    assert (m.errors, m.proxy_errors) == (1, 1)


@pytest.mark.parametrize(
    ("started", "since", "until", "window", "complete"),
    [
        (T0, T0, T0 + 60, 900, True),  # began with the stream
        (T0, T0 + 30.5, T0 + 60, 900, True),
        (T0 + 0.3, T0, T0 + 60, 900, False),  # the agent came up 0.3 s into the window
        (T0 + 120, T0, T0 + 300, 900, False),  # an agent restart in the middle of a watch
        (T0, T0, T0 + 1000, 900, False),  # the ring no longer holds the window's start
        (T0, T0 + 100, T0 + 1000, 900, True),  # exactly the ring
    ],
)
def test_a_window_the_stream_cannot_have_seen_whole_is_incomplete(
    started: float, since: float, until: float, window: int, complete: bool
) -> None:
    s = stats(window=window, started=started)
    assert s.snapshot("v1", since, until).complete is complete


def test_requests_counts_the_whole_service_whichever_release_was_charged() -> None:
    s = stats()
    s.record(RequestEvent(T0 + 1, A, 200, 1.0))
    s.record(refused(T0 + 2))  # no weights yet: unrouted
    s.observe_weights({"v2": 100})
    s.record(refused(T0 + 3))
    assert s.requests(T0, T0 + 10) == 3
    assert s.requests(T0 + 2, T0 + 10) == 2
    # the start snaps inward: the second a switch happened in is the old release's
    assert s.requests(T0 + 1.5, T0 + 10) == 2
    assert s.requests(T0 + 2.5, T0 + 10) == 1


def test_the_service_traffic_window_starts_at_the_first_whole_second() -> None:
    """Worked example of RequestStats.requests: events at 100.2, 100.7, 101.5."""
    s = RequestStats(window=900, clock=lambda: 0.0)
    for ts in (100.2, 100.7, 101.5):
        s.record(RequestEvent(ts, A, 200, 1.0))
    assert s.requests(100.5, 102) == 1
    assert s.requests(100.0, 102) == 3


def test_retain_grows_the_ring_keeps_what_it_holds_and_caps_it() -> None:
    s = stats(window=60)
    s.record(RequestEvent(T0 + 10, A, 200, 1.0))
    s.record(RequestEvent(T0 + 50, A, 500, 1.0))
    s.retain(1_860)
    assert s.window == 1_860
    m = s.snapshot("v1", T0, T0 + 60)
    assert (m.requests, m.errors) == (2, 1)
    s.record(RequestEvent(T0 + 1_500, A, 200, 1.0))  # kept now: 1,500 s > the old 60
    assert s.snapshot("v1", T0, T0 + 1_501).requests == 3
    s.retain(10)  # never shrinks
    assert s.window == 1_860
    assert s.snapshot("v1", T0 + 10, T0 + 1_501).complete
    s.retain(10 * MAX_WINDOW)
    assert s.window == MAX_WINDOW


def test_seconds_a_smaller_ring_let_go_of_stay_missing_after_it_grows() -> None:
    now = [T0]
    s = RequestStats(window=60, clock=lambda: now[0])
    now[0] = T0 + 500  # the 60 s ring holds 440..500 s now; 0..440 s are gone
    s.retain(900)
    assert not s.snapshot("v1", T0 + 100, T0 + 500).complete
    assert s.snapshot("v1", T0 + 440, T0 + 500).complete


def test_an_incomplete_measurement_survives_its_trip_through_json() -> None:
    m = Measurement("v1", T0, T0 + 10, 5, {"2xx": 5}, complete=False)
    assert Measurement.from_dict(m.to_dict()) == m
    assert Measurement.from_dict({"release": "v1", "start": 0, "end": 1}).complete
