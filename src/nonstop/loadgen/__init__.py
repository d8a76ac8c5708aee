"""Open-model load generator: the core of `nonstop verify`, deploy tests and benchmarks.

report = await run_load("http://127.0.0.1:8080/", rps=300, duration=30)
assert report.failed == 0, report.verdict()
"""

from nonstop.loadgen.generator import LoadGenerator, LoadSettings, run_load
from nonstop.loadgen.options import Outcome
from nonstop.loadgen.report import LoadReport, Percentiles, Recorder, TimelineSecond

__all__ = [
    "LoadGenerator",
    "LoadReport",
    "LoadSettings",
    "Outcome",
    "Percentiles",
    "Recorder",
    "TimelineSecond",
    "run_load",
]
