"""After traffic reached 100%: is the new release still within its error budget?

The watched release fails once its error rate over the watch so far is above
``watch.max_error_rate`` with at least ``watch.min_requests`` requests; fewer requests are
``inconclusive`` (the engine keeps watching), never a silent pass. Example with the defaults
(max 0.02, min_requests 20): 12 errors in 500 requests is 0.024 > 0.02 -> fail; 3 in 500 -> pass;
5 errors in 10 requests -> inconclusive (10 < 20).
"""

from __future__ import annotations

from dataclasses import replace

from nonstop.analysis.checks import judge
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.verdict import Verdict
from nonstop.config.schema import CheckConfig, WatchConfig


def watch_verdict(watch: WatchConfig, measurement: Measurement) -> Verdict:
    """Verdict on ``measurement`` (the promoted release, counted since it reached 100%)."""
    check = CheckConfig(
        metric="error_rate", max=watch.max_error_rate, min_samples=watch.min_requests, confidence=0
    )
    verdict = judge(check, measurement, role="promoted")
    reason = verdict.reason.replace("min_samples", "min_requests")
    return replace(verdict, check="watch", reason=f"watch: {reason}")
