"""A window that spans an agent restart is unknown, never a pass; a watch that saw no request
for its release while the service had traffic fails. Worked examples."""

from __future__ import annotations

import pytest

from nonstop.analysis.checks import conclude, judge, new_run, step
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.sequential import new_sequential, observe_windows
from nonstop.analysis.watch import RESTART, watch_end, watch_verdict
from nonstop.config.schema import CheckConfig, WatchConfig

T0 = 1_000.0
ERRORS = CheckConfig(metric="error_rate", max=0.05, min_samples=10, interval=10)
WATCH = WatchConfig(duration=60, max_error_rate=0.02, min_requests=20)


def m(
    i: int, requests: int, errors: int = 0, *, complete: bool = True, release: str = "v2"
) -> Measurement:
    status = {"2xx": requests - errors, "5xx": errors} if requests else {}
    start = T0 + 10 * i
    return Measurement(release, start, start + 10, requests, status, complete=complete)


def test_an_incomplete_window_is_inconclusive_even_with_plenty_of_good_requests() -> None:
    verdict = judge(ERRORS, m(0, 500, complete=False))
    assert verdict.outcome == "inconclusive"
    assert "incomplete window" in verdict.reason


def test_a_canary_does_not_advance_on_a_pass_from_before_an_agent_restart() -> None:
    """Window 0 passed; the agent restarted; window 1 counted 0 of what happened: the step's
    analysis is inconclusive until a complete window is judged again, then it passes."""
    run = new_run([ERRORS])
    run, first = step(run, ERRORS, m(0, 200, 1))
    assert first.outcome == "pass"
    assert conclude(run).outcome == "pass"
    run, second = step(run, ERRORS, m(1, 0, complete=False))
    assert second.outcome == "inconclusive"
    assert conclude(run).outcome == "inconclusive"
    assert "last window was incomplete" in conclude(run).reason
    run, third = step(run, ERRORS, m(2, 200, 2))
    assert third.outcome == "pass"
    assert third.samples == 200, "the incomplete window is not pooled into the next one"
    assert conclude(run).outcome == "pass"


def test_the_sequential_test_ignores_incomplete_windows() -> None:
    run = new_sequential()
    after, verdict = observe_windows(
        run, m(0, 100, 50, complete=False), m(0, 100, 0, complete=False, release="v1")
    )
    assert verdict.outcome == "inconclusive"
    assert after == run


@pytest.mark.parametrize(
    ("measured", "service", "outcome", "check", "reason"),
    [
        (m(0, 300, 1), 300, "pass", "watch", ""),
        (m(0, 300, 12), 300, "fail", "watch", "error_rate 0.04 > max 0.02"),
        (m(0, 0), 140, "fail", "watch", "no request reached v2 while the service answered 140"),
        (m(0, 0), 8, "inconclusive", "watch", "not enough data"),  # stragglers of the old side
        (m(0, 0), 0, "inconclusive", "watch", "not enough data"),
        (m(0, 0), None, "inconclusive", "watch", "not enough data"),
        (m(0, 8), 8, "inconclusive", "watch", "8 requests < min_requests 20"),
        (m(0, 900, complete=False), 900, "inconclusive", RESTART, "incomplete window"),
        # errors an incomplete window holds are real: it still fails
        (m(0, 900, 90, complete=False), 900, "fail", "watch", "error_rate 0.1 > max 0.02"),
    ],
)
def test_watch_end(
    measured: Measurement, service: int | None, outcome: str, check: str, reason: str
) -> None:
    verdict = watch_end(WATCH, measured, service)
    assert (verdict.outcome, verdict.check) == (outcome, check)
    assert reason in verdict.reason


LACKS = "Prometheus at http://p:9090 did not cover a whole window of http_requests_total"


@pytest.mark.parametrize(
    ("measured", "restarts", "outcome", "check", "reason"),
    [
        (m(0, 900, complete=False), 0, "inconclusive", RESTART, "watch: incomplete window"),
        (m(0, 900, complete=False), 1, "inconclusive", RESTART, "incomplete window"),
        (
            m(0, 900, complete=False),
            2,
            "fail",
            "watch",
            f"3 watches of v2 in a row had no complete measurement: {LACKS}; nothing to "
            "judge it by",
        ),
        (m(0, 900, complete=False), 7, "fail", "watch", "8 watches of v2 in a row"),
        # no data at all is "nothing to judge" and completes, as ever: an idle service, or a
        # window shorter than Prometheus's scrapes, is not a failure
        (m(0, 0, complete=False), 2, "inconclusive", "watch", "not enough data"),
        # a whole window after restarts is judged as any other
        (m(0, 300, 1), 2, "pass", "watch", ""),
        (m(0, 300, 12), 5, "fail", "watch", "error_rate 0.04 > max 0.02"),
    ],
)
def test_incomplete_watches_in_a_row_end_in_a_failure_naming_what_the_source_lacks(
    measured: Measurement, restarts: int, outcome: str, check: str, reason: str
) -> None:
    verdict = watch_end(WATCH, measured, None, restarts, LACKS)  # Prometheus: service unknown
    assert (verdict.outcome, verdict.check) == (outcome, check)
    assert reason in verdict.reason


def test_a_watch_in_progress_never_fails_for_want_of_requests() -> None:
    """Zero requests only count against a release when the watch's time is up."""
    assert watch_verdict(WATCH, m(0, 0)).outcome == "inconclusive"
