"""Table tests of plan/warm.py: which kept-warm instances get the quiet step, and when."""

from __future__ import annotations

import pytest

from nonstop.plan.warm import WarmQuiet, due, dump, keep_only, load, mark_sent, switched

V1 = {"v1": WarmQuiet(130.0)}
V1_HALF = {"v1": WarmQuiet(130.0, ("v1-1",))}
WARM = [("v1-1", "v1"), ("v1-2", "v1")]


@pytest.mark.parametrize(
    ("entries", "warm", "involved", "now", "expected"),
    [
        pytest.param(V1, WARM, set(), 129.9, [], id="before the drain deadline"),
        pytest.param(V1, WARM, set(), 130.0, ["v1-1", "v1-2"], id="at the deadline: all"),
        pytest.param(V1_HALF, WARM, set(), 131.0, ["v1-2"], id="after a restart: the rest"),
        pytest.param(V1, WARM, {"v1"}, 131.0, [], id="a rollback to it runs"),
        pytest.param(
            V1, WARM, {"v2"}, 131.0, ["v1-1", "v1-2"], id="the rollout away from it still watches"
        ),
        pytest.param({}, WARM, set(), 131.0, [], id="no entry: not kept warm"),
        pytest.param(V1, [("v2-1", "v2")], set(), 131.0, [], id="only the warm release"),
        pytest.param(
            {"v1": WarmQuiet(130.0, ("v1-1", "v1-2"))}, WARM, set(), 500.0, [], id="all done"
        ),
    ],
)
def test_due(
    entries: dict[str, WarmQuiet],
    warm: list[tuple[str, str]],
    involved: set[str],
    now: float,
    expected: list[str],
) -> None:
    assert due(entries, warm, involved, now) == expected


@pytest.mark.parametrize(
    ("entries", "release", "instance", "expected"),
    [
        (V1, "v1", "v1-1", V1_HALF),
        (V1_HALF, "v1", "v1-1", V1_HALF),  # recorded twice: once
        ({}, "v1", "v1-1", {}),  # the entry went meanwhile (a rollback): nothing comes back
        (
            V1_HALF,
            "v1",
            "v1-2",
            {"v1": WarmQuiet(130.0, ("v1-1", "v1-2"))},
        ),
    ],
)
def test_mark_sent(
    entries: dict[str, WarmQuiet], release: str, instance: str, expected: dict[str, WarmQuiet]
) -> None:
    assert mark_sent(entries, release, instance) == expected


def test_the_stored_form_round_trips_and_bad_values_read_as_none() -> None:
    both = {"v1": WarmQuiet(130.0, ("v1-1",)), "v2": WarmQuiet(7.5)}
    assert dump(both) == {"v1": {"at": 130.0, "sent": ["v1-1"]}, "v2": {"at": 7.5, "sent": []}}
    assert load(dump(both)) == both
    assert load(None) == {}
    assert load([1, 2]) == {}


def test_keep_only_the_releases_still_kept_warm() -> None:
    both = {"v1": WarmQuiet(1.0), "v2": WarmQuiet(2.0)}
    assert keep_only(both, {"v2", "v3"}) == {"v2": WarmQuiet(2.0)}
    assert keep_only(both, set()) == {}


@pytest.mark.parametrize(
    ("entries", "before", "after", "candidate", "expected"),
    [
        pytest.param({}, {"v1": 100}, {"v2": 100}, "v2", V1, id="blue-green switch"),
        pytest.param(V1_HALF, {"v1": 100}, {"v2": 100}, "v2", V1_HALF, id="replayed: kept"),
        pytest.param(V1_HALF, {"v2": 100}, {"v1": 100}, "v2", {}, id="back to it: none"),
        pytest.param(
            V1, {"v2": 100}, {"v1": 100}, "v1", {"v2": WarmQuiet(130.0)}, id="rollback switch"
        ),
        pytest.param({}, {"v1": 100}, {"v1": 90, "v2": 10}, "v2", {}, id="canary step"),
        pytest.param({}, {"v1": 10, "v2": 90}, {"v2": 100}, "v2", V1, id="canary at 100%"),
        pytest.param({}, {"v1": 100, "v2": 0}, {"v1": 100}, "v2", {}, id="candidate given up"),
        pytest.param({}, {}, {"v1": 100}, "v1", {}, id="first deploy"),
        pytest.param(V1, {"v2": 100}, {"v2": 100}, "v3", V1, id="unchanged"),
    ],
)
def test_switched(
    entries: dict[str, WarmQuiet],
    before: dict[str, int],
    after: dict[str, int],
    candidate: str,
    expected: dict[str, WarmQuiet],
) -> None:
    """The drain deadline is the switch (t=100) plus the release's drain_timeout (30 s)."""
    assert switched(entries, before, after, candidate, 100.0, lambda _: 30.0) == expected
