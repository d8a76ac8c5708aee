"""nonstop.analysis: pure verdicts from per-release measurements.

No I/O, no clock, no randomness (the simulation takes a seeded generator): time and observations
come in as arguments, so every verdict can be recomputed from the journal.

- :mod:`.verdict`: Verdict (pass / fail / inconclusive, with the numbers in its reason).
- :mod:`.checks`: error rate, latency and query thresholds; AnalysisRun and ``step``.
- :mod:`.sequential`: the always-valid canary-versus-stable error test (an e-process).
- :mod:`.weight`: does the router send the canary the share that was set?
- :mod:`.watch`: the error budget of a release after it reached 100%.
- :mod:`.presets`: ``progressive`` and ``quick`` canary steps as data.
- :mod:`.explain`: rows for ``nonstop explain``.
"""

from nonstop.analysis.checks import (
    AnalysisRun,
    CheckRun,
    QueryValue,
    conclude,
    judge,
    new_run,
    step,
    step_sequential,
)
from nonstop.analysis.explain import ExplainRow, explain, explain_history
from nonstop.analysis.measurement import Measurement
from nonstop.analysis.presets import preset_steps, preset_watch
from nonstop.analysis.sequential import Counts, SequentialRun, new_sequential, observe
from nonstop.analysis.verdict import Verdict
from nonstop.analysis.watch import watch_verdict
from nonstop.analysis.weight import weight_verdict

__all__ = [
    "AnalysisRun",
    "CheckRun",
    "Counts",
    "ExplainRow",
    "Measurement",
    "QueryValue",
    "SequentialRun",
    "Verdict",
    "conclude",
    "explain",
    "explain_history",
    "judge",
    "new_run",
    "new_sequential",
    "observe",
    "preset_steps",
    "preset_watch",
    "step",
    "step_sequential",
    "watch_verdict",
    "weight_verdict",
]
