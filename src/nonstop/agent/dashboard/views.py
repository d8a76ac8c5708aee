"""What each dashboard page shows, as JSON-able data, read from the running agent.

Nothing here computes a second truth: the overview is the agent's own ``status`` answer, a
rollout's verdicts are ``nonstop analysis explain``'s data (``analysis_report``), the charts
come from the same per-second ring the analysis measures from (``RequestStats``), history and
events from the store, flags from the flag service.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nonstop.drivers.metrics.request_stats import UNROUTED, RequestStats, SecondPoint
from nonstop.errors import NonstopError

if TYPE_CHECKING:
    from nonstop.agent.paths import Paths
    from nonstop.config.schema import NonstopConfig
    from nonstop.engine.engine import Engine
    from nonstop.flags.service import FlagService
    from nonstop.store import RolloutRow

MEASURED_WINDOW = 10.0
"""Seconds of traffic the overview's measured weights are taken over."""
STEP_EVENT = re.compile(r"^step (\d+)/(\d+)")
"""A canary step's headline event ("step 2/4: weight 25% ..."): a boundary on the charts."""
SETTLED = 3
"""A second this many seconds old no longer changes: its chart point is cached."""


class AgentView(Protocol):
    """What the dashboard reads from the agent (nonstop.agent.daemon.Agent)."""

    engine: Engine
    stats: RequestStats
    flags: FlagService
    config: NonstopConfig
    paths: Paths
    recovered: asyncio.Event

    async def status_data(self) -> dict[str, Any]: ...


def measured_weights(stats: RequestStats, releases: Iterable[str], now: float) -> dict[str, Any]:
    """Each release's share of the requests over the last MEASURED_WINDOW seconds, in percent
    (None when nothing was served), beside the request count it is taken from."""
    since = now - MEASURED_WINDOW
    counts = {r: sum(p.requests for p in stats.seconds(r, since, now)) for r in releases}
    total = sum(counts.values())
    shares = {r: (round(100.0 * n / total, 1) if total else None) for r, n in counts.items()}
    return {"window_s": MEASURED_WINDOW, "requests": total, "percent": shares}


def overview(status: dict[str, Any], stats: RequestStats, events: list[dict[str, Any]]) -> Any:
    releases = set(status.get("weights") or {}) | {i["release"] for i in status["instances"]}
    measured = measured_weights(stats, sorted(releases), time.time())
    return {**status, "measured_weights": measured, "events": events}


def duration(row: Mapping[str, Any]) -> float | None:
    end = row.get("finished_at")
    return None if end is None else float(end) - float(row["started_at"])


def history(rows: Sequence[RolloutRow], releases: Sequence[Any]) -> dict[str, Any]:
    rollouts = []
    for row in rows:
        data = {k: v for k, v in row.to_dict().items() if k != "state"}
        data["phase"] = row.state.get("phase")
        data["duration_s"] = duration(data)
        rollouts.append(data)
    named = [{"name": r.name, "created_at": r.created_at} for r in releases]
    return {"rollouts": rollouts, "releases": sorted(named, key=lambda r: -r["created_at"])}


def step_boundaries(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Where each canary step began, from its headline event, and where the rollout ended."""
    marks = []
    for event in events:
        match = STEP_EVENT.match(str(event["message"]))
        if match:
            marks.append({"ts": event["ts"], "label": f"step {match[1]}/{match[2]}"})
    return marks


def canary_plan(config: NonstopConfig, row: RolloutRow) -> list[dict[str, Any]] | None:
    """A canary's steps as the planner walks them (a preset resolved): weight, pause, checks."""
    if row.strategy != "canary" or row.rollback:
        return None
    from nonstop.plan import canary
    from nonstop.plan.model import RolloutSpec

    spec = RolloutSpec("canary", row.candidate, row.stable, config)
    return [
        {
            "weight": step.weight,
            "pause": "until promoted" if step.pause == {} else step.pause,
            "analysis": [canary._name(check) for check in step.analysis or ()],
        }
        for step in canary.steps(spec)
    ]


def verdict_of(row: RolloutRow, standing: str | None = None) -> dict[str, Any]:
    """Why the rollout ended as it did (or where it stands, in its planner's words: what it
    waits for and the last real verdict), in one sentence."""
    if row.running:
        paused = bool(row.state.get("paused"))
        return {"outcome": "paused" if paused else "running", "reason": standing or row.reason}
    return {"outcome": row.status, "reason": row.reason}


@dataclass(slots=True)
class _Settled:
    start: int
    end: int
    points: list[SecondPoint] = field(default_factory=list)


@dataclass
class ChartCache:
    """Per-second chart points of each release. A second SETTLED seconds old no longer changes,
    so its point (two percentiles of its histogram) is computed once and kept, for the span of
    one rollout per release; a rollout from before that span is computed afresh."""

    stats: RequestStats
    clock: Callable[[], float] = time.time
    settled: dict[str, _Settled] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    """A page load computes in a thread (off the agent's event loop): one at a time."""

    def points(self, release: str, since: float, until: float) -> list[SecondPoint]:
        with self.lock:
            return self._points(release, since, until)

    def _points(self, release: str, since: float, until: float) -> list[SecondPoint]:
        first = math.floor(since)
        cut = min(int(self.clock()) - SETTLED, math.ceil(until))
        done = self.settled.get(release)
        if done is None or not done.start <= first <= done.end:
            done = self.settled[release] = _Settled(first, first)
        fresh = self.stats.seconds(release, done.end, until)
        if cut > done.end:
            done.points += [p for p in fresh if p.second < cut]
            done.end = cut
            fresh = [p for p in fresh if p.second >= cut]
        return [p for p in done.points if first <= p.second < until] + fresh


def chart_series(cache: ChartCache, row: RolloutRow, now: float) -> dict[str, Any]:
    """Per release of the rollout, a point per second with traffic from its start on: requests,
    5xx, p50 and p99 in ms (compact lists: [second, requests, errors, p50, p99])."""
    # A live chart ends at the last whole second: the one under way would show as a drop.
    until = row.finished_at + 1 if row.finished_at is not None else float(math.floor(now))
    series = {}
    for release in [r for r in (row.stable, row.candidate) if r] + [UNROUTED]:
        points = cache.points(release, row.started_at, until)
        if release == UNROUTED and not points:
            continue  # shown only when the router answered requests no release took
        series[release] = [
            [p.second, p.requests, p.errors, round(p.p50_ms, 2), round(p.p99_ms, 2)] for p in points
        ]
    return {"from": row.started_at, "until": until, "series": series}


def flag_rows(service: FlagService) -> list[dict[str, Any]]:
    """Each flag: state, strategies, rollout percent, and its guarded rollout if it has one."""
    rows = []
    for feature in service.store.features():
        row = service.summary(feature)
        row["description"] = feature.get("description") or ""
        row["strategy_names"] = [s.get("name") for s in feature.get("strategies") or ()]
        row["guarded"] = _guarded(service.store.rollout(feature["name"]))
        rows.append(row)
    return rows


def _guarded(rollout: dict[str, Any] | None) -> dict[str, Any] | None:
    if rollout is None:
        return None
    plan = rollout["plan"]
    steps, index = list(plan.get("steps", ())), int(plan.get("index", 0))
    return {
        "status": rollout["status"],
        "reason": rollout["reason"],
        "steps": steps,
        "percent": steps[index] if 0 <= index < len(steps) else None,
        "updated_at": rollout["updated_at"],
    }


def migrations(agent: AgentView) -> dict[str, Any]:
    """``nonstop migrate status`` for the agent's project (run in a thread by the caller)."""
    settings = agent.config.migrations
    if settings is None:
        return {"configured": False, "message": "no [migrations] section in nonstop.toml"}
    if settings.tool != "sql":
        return {
            "configured": False,
            "message": f"[migrations] tool = {settings.tool}: its own history table is the record",
        }
    from nonstop.migrate import runner

    try:
        entries = runner.status(settings, base_dir=agent.paths.project)
    except (NonstopError, OSError) as exc:
        return {"configured": True, "error": str(exc), "entries": []}
    return {"configured": True, "entries": [e.to_dict() for e in entries]}
