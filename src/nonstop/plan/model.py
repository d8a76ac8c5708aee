"""The language planners and the engine share: what is observed, what to do, and progress.

A planner is a pure function ``decide(spec, state, observed) -> Decision`` (DESIGN.md): it reads
no clock (``observed.now`` is the time), does no I/O, and returns *declarative* actions, so
running the same decision twice has the effect of running it once (invariant 4):

- ``ScaleRelease(release, replicas)``: make exactly ``replicas`` serving instances of the release
  exist. New ones start and receive no traffic until ready (invariant 1). Surplus ones leave the
  router first, drain (in-flight requests and long-lived connections, up to the drain deadline)
  and only then stop (invariant 2).
- ``SetWeights(weights)``: the share of traffic per release, in percent, summing to 100. ``None``
  means "every ready instance of every release gets an equal share" (rolling updates).
- ``RunSmoke(release)``: run the configured smoke command against that release directly.
- ``Finish(outcome, reason)``: the rollout is over.

Progress (``RolloutState``) is plain JSON-able data persisted by the engine before any action
runs, so a restarted agent re-decides from it plus fresh observations (STYLE.md #2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from nonstop.analysis.checks import QueryValue
from nonstop.analysis.measurement import Measurement
from nonstop.config.schema import NonstopConfig

Outcome = Literal["completed", "aborted", "rolled_back"]
Command = Literal["promote", "promote_full", "pause", "resume", "abort", "rollback"]


@dataclass(frozen=True, slots=True)
class InstanceView:
    id: str
    release: str
    ready: bool
    draining: bool = False
    started_at: float = 0.0
    ready_since: float | None = None
    failed: str | None = None
    """Why the instance cannot serve (exited, readiness deadline passed); None while healthy."""
    role: str = "web"
    """The process role: "web" (``[app]``, routed) or a ``[processes.<role>]`` name."""


@dataclass(frozen=True, slots=True)
class Observed:
    now: float
    instances: tuple[InstanceView, ...] = ()
    weights: Mapping[str, int] | None = None
    """Weights the router serves now (None: equal per instance, or nothing routed yet)."""
    measurements: Mapping[str, Measurement] = field(default_factory=dict)
    """Per release, counted since ``state.phase_started_at``."""
    queries: Mapping[str, QueryValue] = field(default_factory=dict)
    """Per ``query`` check template, the candidate's value since ``state.phase_started_at``
    (from the metrics provider; an error value when it has none)."""
    traffic: int | None = None
    """Every request the router answered since ``state.phase_started_at``, whichever release it
    was charged to (None: the metrics source cannot say). A watched release with no request
    while the service had ``min_requests`` is not serving."""
    smoke: str | None = None
    """None: not run or still running; "passed"; or "failed: <reason>"."""
    command: Command | None = None
    pending: Mapping[str, str] = field(default_factory=dict)
    """Per release, what its other process roles still miss ("worker has 1/2 ready"): such a
    release counts no ready web instance, so no strategy moves traffic to it (plan/roles.py)."""

    def serving(self, release: str) -> list[InstanceView]:
        """Web instances of ``release`` that are not leaving."""
        return [
            i for i in self.instances if i.release == release and not i.draining and i.role == "web"
        ]

    def ready(self, release: str, *, since: float | None = None) -> int:
        """Ready serving instances of ``release`` (with ``since``: ready since then); none
        while another role of the release is not ready."""
        if self.pending.get(release):
            return 0
        return sum(
            1
            for i in self.serving(release)
            if i.ready and (since is None or (i.ready_since is not None and i.ready_since <= since))
        )

    def failed(self, release: str) -> list[InstanceView]:
        """Instances of ``release`` that cannot serve, of every role."""
        return [i for i in self.instances if i.release == release and not i.draining and i.failed]

    def draining(self, release: str | None = None) -> int:
        return sum(
            1
            for i in self.instances
            if i.draining and i.role == "web" and release in (None, i.release)
        )


@dataclass(frozen=True, slots=True)
class ScaleRelease:
    release: str
    replicas: int
    kind: Literal["scale"] = "scale"


@dataclass(frozen=True, slots=True)
class SetWeights:
    weights: Mapping[str, int] | None
    kind: Literal["weights"] = "weights"


@dataclass(frozen=True, slots=True)
class RunSmoke:
    release: str
    kind: Literal["smoke"] = "smoke"


@dataclass(frozen=True, slots=True)
class Finish:
    outcome: Outcome
    reason: str
    kind: Literal["finish"] = "finish"


Action = ScaleRelease | SetWeights | RunSmoke | Finish


def action_to_dict(action: Action) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": action.kind}
    if isinstance(action, ScaleRelease):
        data.update(release=action.release, replicas=action.replicas)
    elif isinstance(action, SetWeights):
        data["weights"] = dict(action.weights) if action.weights is not None else None
    elif isinstance(action, RunSmoke):
        data["release"] = action.release
    else:
        data.update(outcome=action.outcome, reason=action.reason)
    return data


def action_from_dict(data: Mapping[str, Any]) -> Action:
    kind = data["kind"]
    if kind == "scale":
        return ScaleRelease(str(data["release"]), int(data["replicas"]))
    if kind == "weights":
        weights = data["weights"]
        return SetWeights({str(k): int(v) for k, v in weights.items()} if weights else None)
    if kind == "smoke":
        return RunSmoke(str(data["release"]))
    if kind == "finish":
        return Finish(data["outcome"], str(data["reason"]))
    raise ValueError(f"unknown action kind {kind!r}")


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """What a rollout moves between, fixed when it starts."""

    strategy: Literal["bluegreen", "rolling", "canary"]
    candidate: str
    stable: str | None
    """The release serving before the rollout (None for the very first deploy)."""
    config: NonstopConfig
    rollback: bool = False
    """A rollback: switch at once, no smoke test, no watch."""

    @property
    def replicas(self) -> int:
        return self.config.app.replicas

    @property
    def progress_deadline(self) -> float:
        """Seconds a phase waiting for instances may go without progress."""
        strategy = self.config.strategy
        if self.strategy == "rolling" and strategy.rolling.progress_deadline is not None:
            return float(strategy.rolling.progress_deadline)
        return float(strategy.progress_deadline)


def stalled(
    spec: RolloutSpec, phase: str, since: float, observed: Observed, release: str, want: int
) -> str:
    """Why a phase waiting since ``since`` for ``want`` ready instances of ``release`` gives
    up, or "" while it is within ``spec.progress_deadline`` (or has them all)."""
    waited = observed.now - since
    if waited <= spec.progress_deadline or observed.ready(release) >= want:
        return ""
    return (
        f"{phase}: no progress for {waited:.0f}s (progress_deadline "
        f"{spec.progress_deadline:g}s): {waiting_for(observed, release, want)}"
    )


def waiting_for(observed: Observed, release: str, want: int) -> str:
    """What a phase waiting for ``want`` ready instances of ``release`` still misses, for the
    reason a deadline gives: "v2 has 2/4 ready; v2-3: starting, v2-4: exited with code 1".

    >>> view = (InstanceView("v2-1", "v2", True), InstanceView("v2-2", "v2", False))
    >>> waiting_for(Observed(0, view), "v2", 2)
    'v2 has 1/2 ready; v2-2 not ready'
    """
    ready = observed.ready(release)
    missing = [
        f"{i.id} {'failed: ' + i.failed if i.failed else 'not ready'}"
        for i in observed.serving(release)
        if not i.ready
    ]
    pending = observed.pending.get(release)
    if pending:
        missing.append(f"waiting for its {pending}")
    detail = "; " + ", ".join(missing) if missing else ""
    return f"{release} has {ready}/{want} ready{detail}"


WATCH_RESTARTS = "watch_restarts"
"""``state.data`` key: incomplete watches so far, in a row (``analysis.watch.RESTART_LIMIT``)."""


def watch_again(state: RolloutState) -> RolloutState:
    """``state`` counting one more incomplete watch (the planner then watches again)."""
    return replace(state, data={**state.data, WATCH_RESTARTS: restarts(state) + 1})


def restarts(state: RolloutState) -> int:
    return int(state.data.get(WATCH_RESTARTS, 0))


def metrics_lack(spec: RolloutSpec) -> str:
    """What the metrics source did not give when it never had a whole window of the candidate,
    for the reason a watch gives up with (with Prometheus: the query it asks)."""
    metrics = spec.config.metrics
    if metrics.provider != "prometheus":
        return "the router's request stream did not cover a whole window"
    query = f'sum by (status) (increase(http_requests_total{{release="{spec.candidate}"}}[...]))'
    return f"Prometheus at {metrics.prometheus_url} did not cover a whole window of {query}"


@dataclass(frozen=True, slots=True)
class RolloutState:
    phase: str
    phase_started_at: float
    step: int = 0
    paused: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)
    """Strategy-specific JSON-able progress (analysis runs, counters)."""

    def enter(self, phase: str, now: float, **changes: Any) -> RolloutState:
        return replace(self, phase=phase, phase_started_at=now, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "phase_started_at": self.phase_started_at,
            "step": self.step,
            "paused": self.paused,
            "data": dict(self.data),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        return cls(
            phase=str(data["phase"]),
            phase_started_at=float(data["phase_started_at"]),
            step=int(data.get("step", 0)),
            paused=bool(data.get("paused", False)),
            data=dict(data.get("data", {})),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    state: RolloutState
    actions: tuple[Action, ...] = ()
    events: tuple[str, ...] = ()
    """Human sentences worth recording ("candidate v2 ready (2/2)", "error rate 4.1% > 2%")."""
    wake_in: float | None = None
    """Decide again no later than this many seconds from now (None: on the next observation)."""

    @property
    def finished(self) -> Finish | None:
        return next((a for a in self.actions if isinstance(a, Finish)), None)
