r"""After traffic reached 100%: is the new release still within its error budget?

The watched release fails once its error rate over the watch so far is above
``watch.max_error_rate`` with at least ``watch.min_requests`` requests; fewer requests are
``inconclusive`` (the engine keeps watching), never a silent pass. Example with the defaults
(max 0.02, min_requests 20): 12 errors in 500 requests is 0.024 > 0.02 -> fail; 3 in 500 -> pass;
5 errors in 10 requests -> inconclusive (10 < 20).

Every response the router sent while the release was meant to serve is in its measurement,
the router's own 502/503 included (the request stream charges those to the releases the
weights name), so a release whose instances die shows up here as errors.

When the watch's time is up, :func:`watch_end` says whether it may complete:

=========================================  ============  ==========================================
measurement at the end                     service       verdict
=========================================  ============  ==========================================
300 requests, 1 error                      any           pass
300 requests, 12 errors                    any           fail (error rate)
0 requests                                 140 requests  fail: no request reached the release
0 requests                                 8 requests    inconclusive: stragglers (completes)
0 requests                                 0 / unknown   inconclusive: nothing to judge (completes)
8 requests (< min_requests 20)             any           inconclusive: too few (completes)
incomplete window (an agent restart)       any           inconclusive, ``restart``: watch again
incomplete, the 3rd watch in a row         any           fail: nothing to judge it by (the source)
=========================================  ============  ==========================================

``service`` is every request the router answered over the same window, whichever release it
was charged to; None when the metrics source cannot say. A release that got nothing while the
service answered at least ``min_requests`` is not serving, whatever its (empty) error rate
says. Fewer may be stragglers: requests the router held for the previous release (retrying a
dead upstream) that ended after the switch, counted where they belong.

An incomplete window is watched again, but not forever: a metrics source that never has the
release's numbers (Prometheus without a series for it: not scraped, or another label) would
restart the watch without end. The :data:`RESTART_LIMIT`\ th incomplete watch in a row fails,
naming what the source lacks (``source``, from the planner: the Prometheus query).
"""

from __future__ import annotations

from dataclasses import replace

from nonstop.analysis.checks import judge
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.verdict import Verdict
from nonstop.config.schema import CheckConfig, WatchConfig

RESTART = "restart"
"""``Verdict.check`` of an end-of-watch verdict whose window was incomplete: watch again."""
RESTART_LIMIT = 3
"""Incomplete watches in a row that end the rollout: an agent restart costs one (the next
window is whole), a source that never has the release's numbers costs them all."""


def watch_verdict(watch: WatchConfig, measurement: Measurement) -> Verdict:
    """Verdict on ``measurement`` (the promoted release, counted since it reached 100%).

    Errors in an incomplete window are real, so it can fail; it never passes."""
    check = CheckConfig(
        metric="error_rate", max=watch.max_error_rate, min_samples=watch.min_requests, confidence=0
    )
    verdict = judge(check, replace(measurement, complete=True), role="promoted")
    if verdict.outcome == "pass" and not measurement.complete:
        reason = (
            f"incomplete window, it began before the request records kept now (an agent "
            f"restart?); {measurement.errors}/{measurement.requests} errors counted"
        )
        return Verdict("inconclusive", RESTART, f"watch: {reason}", None, check.max, 0)
    reason = verdict.reason.replace("min_samples", "min_requests")
    return replace(verdict, check="watch", reason=f"watch: {reason}")


def watch_end(
    watch: WatchConfig,
    measurement: Measurement,
    service: int | None,
    restarts: int = 0,
    source: str = "",
) -> Verdict:
    """The verdict when the watch's time is up (see the table in the module doc).
    ``restarts``: incomplete watches before this one, in a row; ``source``: what the metrics
    source would need to have, for the reason when the watch gives up."""
    verdict = watch_verdict(watch, measurement)
    if verdict.check == RESTART and restarts + 1 >= RESTART_LIMIT:
        lacks = f": {source}" if source else ""
        reason = (
            f"watch: {restarts + 1} watches of {measurement.release} in a row had no complete "
            f"measurement{lacks}; nothing to judge it by"
        )
        return Verdict("fail", "watch", reason, None, watch.max_error_rate, 0)
    if verdict.outcome == "fail" or verdict.check == RESTART:
        return verdict
    if measurement.requests == 0 and service is not None and service >= watch.min_requests:
        reason = (
            f"watch: no request reached {measurement.release} while the service answered "
            f"{service}; it is not serving"
        )
        return Verdict("fail", "watch", reason, None, watch.max_error_rate, 0)
    return verdict


def watch_summary(measurement: Measurement | None) -> str:
    """ "3/500 errors during the watch", or why there is nothing to judge."""
    if measurement is None or measurement.requests == 0:
        return "no requests during the watch"
    counted = f"{measurement.errors}/{measurement.requests} errors during the watch"
    return counted
