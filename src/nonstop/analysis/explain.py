"""Rows for ``nonstop explain`` (and its ``--json``): what each check saw and decided.

Pure: give it an AnalysisRun, get rows; the CLI prints them. One row per check with its latest
window (:func:`explain`), or one row per judged window (:func:`explain_history`). The ``verdict``
column of a check row is the check's standing, not only its last window: ``fail`` once it failed
(failure_limit reached), ``inconclusive`` once its inconclusive streak hit the limit,
``pending`` before any window arrived, else the last window's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from nonstop.analysis.checks import AnalysisRun, CheckRun
from nonstop.analysis.sequential import SequentialRun
from nonstop.analysis.verdict import Verdict, num
from nonstop.config.schema import CheckConfig

COLUMNS = ("check", "samples", "value", "threshold", "verdict", "reason")


@dataclass(frozen=True, slots=True)
class ExplainRow:
    check: str
    samples: int
    value: float | None
    threshold: str
    """The bound as people read it: ``<= 0.001``, ``<= 500ms``, ``e < 100``."""
    verdict: str
    reason: str
    unit: str = ""

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """The row as printable strings, in :data:`COLUMNS` order."""
        value = "-" if self.value is None else f"{num(self.value)}{self.unit}"
        return (self.check, str(self.samples), value, self.threshold, self.verdict, self.reason)

    def to_dict(self) -> dict[str, object]:
        return {
            "check": self.check,
            "samples": self.samples,
            "value": self.value,
            "threshold": self.threshold,
            "verdict": self.verdict,
            "reason": self.reason,
        }


def explain(run: AnalysisRun) -> list[ExplainRow]:
    """One row per check, then one for the sequential test if it runs."""
    rows = [_check_row(c) for c in run.checks]
    if run.sequential is not None:
        rows.append(_sequential_row(run.sequential))
    return rows


def explain_history(run: AnalysisRun) -> list[ExplainRow]:
    """One row per window each check judged, in the order they came, check by check."""
    rows = []
    for c in run.checks:
        bound, unit = threshold_text(c.check), _unit(c.check)
        rows += [_row(v, bound, v.outcome, unit) for v in c.verdicts]
    if run.sequential is not None and run.sequential.last is not None:
        rows.append(_sequential_row(run.sequential))
    return rows


def threshold_text(check: CheckConfig) -> str:
    unit = _unit(check)
    parts = []
    if check.min is not None:
        parts.append(f">= {num(check.min)}{unit}")
    if check.max is not None:
        parts.append(f"<= {num(check.max)}{unit}")
    return ", ".join(parts)


def _unit(check: CheckConfig) -> str:
    return "ms" if check.metric == "latency" else ""


def _check_row(c: CheckRun) -> ExplainRow:
    bound, unit = threshold_text(c.check), _unit(c.check)
    last = c.last
    if last is None:
        return ExplainRow(c.name, 0, None, bound, "pending", "no window measured yet", unit)
    standing = {"failed": "fail", "inconclusive": "inconclusive"}.get(c.phase, last.outcome)
    counts = f" [{c.passed} passed, {c.failed} failed, {c.inconclusive} inconclusive]"
    return _row(last, bound, standing, unit, counts)


def _sequential_row(s: SequentialRun) -> ExplainRow:
    bound = f"e < {num(s.threshold)}"
    if s.last is None:
        return ExplainRow("sequential", 0, s.e_value, bound, "pending", "no counts fed yet")
    return _row(s.last, bound, "fail" if s.rejected else s.last.outcome, "")


def _row(v: Verdict, bound: str, standing: str, unit: str, suffix: str = "") -> ExplainRow:
    return ExplainRow(v.check, v.samples, v.value, bound, standing, v.reason + suffix, unit)
