"""The fleet planner: one rollout across many hosts, decided from data (pure, like plan/).

``decide(spec, state, observed) -> FleetDecision`` reads no clock and does no I/O. Each host
runs its own rollout through its own agent (the host-level strategies of plan/); this layer
decides *which hosts* move *when*, and what the front does meanwhile. Actions are declarative
and idempotent: ``HostDeploy(web2, v2)`` means "web2 should serve v2", so replaying a journaled
decision after a restart has the effect of doing it once.

Strategies::

    rolling    batches of max_unavailable hosts: drain at the front, deploy, ready -> enable;
               batch_wait between batches; completed when every host serves the candidate;
               the candidate's error rate at the front (all its hosts) is checked throughout
    canary     the canary hosts first (one batch), then analysis on the front's per-release
               stream (the candidate's error rate over every canary host), then the rest as
               rolling; a failed analysis rolls the canary hosts back: the others never run it
    bluegreen  lockstep: every host starts the candidate held (not switched); once all hold it
               ready, every host switches in the same decision; any host failing to prepare
               aborts them all before anyone switched. With ``edge_switch`` the switch is ONE
               change at the edge (``EdgePin``, decision 0581): the edge stamps every request
               with the candidate and each host's router sends it to the candidate's held
               instances; only then are the hosts promoted, which users no longer see

The edge pin: with ``edge_switch``, the edge stamps each request with a release and every host's
router sends a stamped request to that release's instances while it has them ready (held or
kept warm): a blue-green fleet switch, its abort and a fleet rollback are each one change at the
edge, whatever each host's own table says at that instant. Every other rollout (rolling, canary)
moves hosts one by one, so it first clears the pin: a host's new release has no slot for the
old pinned one once that release stops there. No phase moves on until the edge pins what the
phase wants (``pin_for``).

Retries: a host of the step (a batch, the blue-green prepare or switch) whose call did not take
- the SSH link dropped, its agent restarting, a timeout: reachable and idle, or unreachable - is
tried again with backoff (``retry_backoff``, doubled each time) up to ``retries`` more times; an
attempt that falls due while the host does not answer is spent without a call. Only then does
the policy apply (``on_host_lost`` for a host that does not answer, abort otherwise). A host's
own verdict (its rollout failed) is not retried: the release is judged, not the link. Retrying
is safe because the actions are declarative: a host already moving to the release is left alone.

Abort (a failure, an operator's abort, a lost host with ``on_host_lost = "pause"`` then
abort) moves every host that runs the candidate back to the stable release, which is warm there
(kept by the host's agent), and only then ends: 0 hosts on a mixed version. A host that cannot
be reached stays drained at the front and is listed in the reason; it converges when it answers.

Worked example, rolling, 4 hosts, max_unavailable 1, batch_wait 10 (``t`` in seconds)::

    t0   all on v1                   -> drain web1, deploy v2 on web1     batch [web1]
    t3   web1 serves v2, ready        -> enable web1                      done [web1], wait
    t13  batch_wait over             -> drain web2, deploy v2 on web2    batch [web2]
    ...  web4 serves v2              -> enable web4, finish completed
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from nonstop.analysis.weight import wilson_interval

Strategy = Literal["rolling", "canary", "bluegreen"]
FleetCommand = Literal["abort", "resume", "promote"]
Outcome = Literal["completed", "aborted", "rolled_back"]

BATCH, WAIT, ANALYSIS, PREPARE, PIN, SWITCH, BACK = (
    "batch",
    "wait",
    "analysis",
    "prepare",
    "pin",
    "switch",
    "rolling_back",
)
TICK = 0.5
CONFIDENCE = 0.95
"""An error rate fails when its Wilson lower bound at this confidence is above the maximum:
one unlucky error in a few dozen requests is not a verdict (1/36 is 2.8%, its bound 0.1%)."""


@dataclass(frozen=True, slots=True)
class FleetSpec:
    strategy: Strategy
    candidate: str
    stable: str | None
    hosts: tuple[str, ...]
    """The web hosts, in the order they move (canary hosts first)."""
    canary: tuple[str, ...] = ()
    max_unavailable: int = 1
    batch_wait: float = 0.0
    on_host_lost: Literal["pause", "continue"] = "pause"
    max_error_rate: float = 0.02
    min_requests: int = 50
    analysis_duration: float = 30.0
    """Canary: how long the canary hosts serve before the analysis can pass."""
    deadline: float = 600.0
    """Longest wait for a host to serve the candidate (or to come back) before giving up."""
    retries: int = 4
    """How many more times a host's step is tried after it did not take."""
    retry_backoff: float = 1.0
    """The wait before the first retry, doubled for each next one."""
    edge_switch: bool = False
    """The edge moves traffic between releases by pinning one (blue-green, rollback)."""
    rollback: bool = False
    """Back to a release warm on every host (``nonstop fleet rollback``): with ``edge_switch``
    the edge pins it first, so every user is back at once; the hosts follow."""

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def backoff(self, made: int) -> float:
        """The wait after attempt ``made`` (1, 2, ...) before the next one."""
        return float(self.retry_backoff * 2.0 ** (made - 1))


@dataclass(frozen=True, slots=True)
class HostView:
    name: str
    reachable: bool = True
    active: str | None = None
    """The release the host serves (its agent's active release)."""
    rollout: str | None = None
    """The candidate of the rollout running on the host, if any."""
    held: bool = False
    """Its rollout waits for promotion with the candidate ready (blue-green prepared)."""
    failed: str | None = None
    """Why the host's last rollout to our candidate did not complete (None: it did not fail)."""
    warm: frozenset[str] = frozenset()
    """Releases with ready instances on the host (what a rollback may switch to at once)."""
    calling: bool = False
    """A call of the controller for the host's step is still in flight (copying the release,
    the host building it): progress, not a step that did not take."""
    trouble: str = ""
    """Why the controller's last call to the host failed (it did not answer, or a call for
    the host's step broke off), "" when nothing did: the reason a retry names."""
    slots: bool = True
    """Its router honours the edge's pin (``router.release_slots``)."""


@dataclass(frozen=True, slots=True)
class ReleaseCounts:
    requests: int = 0
    errors: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def above(self, limit: float) -> bool:
        """Shown above ``limit`` with CONFIDENCE (Wilson lower bound)."""
        return wilson_interval(self.errors, self.requests, CONFIDENCE)[0] > limit


@dataclass(frozen=True, slots=True)
class FleetObserved:
    now: float
    hosts: Mapping[str, HostView]
    measurements: Mapping[str, ReleaseCounts] = field(default_factory=dict)
    """Per release, at the front, since the current phase started."""
    command: FleetCommand | None = None
    pinned: str | None = None
    """The release the edge stamps on every request (None: no stamp, each host's table)."""

    def host(self, name: str) -> HostView:
        return self.hosts.get(name) or HostView(name, reachable=False)


@dataclass(frozen=True, slots=True)
class HostDeploy:
    host: str
    release: str
    hold: bool = False
    """Start it without switching (blue-green lockstep); ``HostPromote`` switches."""
    rollback: bool = False
    """Back to a warm release: switch at once, nothing built."""
    kind: Literal["deploy"] = "deploy"


@dataclass(frozen=True, slots=True)
class HostPromote:
    host: str
    kind: Literal["promote"] = "promote"


@dataclass(frozen=True, slots=True)
class HostAbort:
    host: str
    kind: Literal["abort"] = "abort"


@dataclass(frozen=True, slots=True)
class FrontHosts:
    """The hosts the front sends traffic to (all others are drained)."""

    enabled: tuple[str, ...]
    kind: Literal["front"] = "front"


@dataclass(frozen=True, slots=True)
class EdgePin:
    """The edge stamps every request with ``release`` from now on (None: no stamp)."""

    release: str | None
    kind: Literal["pin"] = "pin"


@dataclass(frozen=True, slots=True)
class FleetFinish:
    outcome: Outcome
    reason: str
    kind: Literal["finish"] = "finish"


FleetAction = HostDeploy | HostPromote | HostAbort | FrontHosts | EdgePin | FleetFinish
ACTION_TYPES: dict[str, type[Any]] = {
    "deploy": HostDeploy,
    "promote": HostPromote,
    "abort": HostAbort,
    "front": FrontHosts,
    "pin": EdgePin,
    "finish": FleetFinish,
}


def action_to_dict(action: FleetAction) -> dict[str, Any]:
    data = {name: getattr(action, name) for name in action.__slots__}
    if isinstance(action, FrontHosts):
        data["enabled"] = list(action.enabled)
    return data


def action_from_dict(data: Mapping[str, Any]) -> FleetAction:
    kind = data["kind"]
    if kind not in ACTION_TYPES:
        raise ValueError(f"unknown fleet action kind {kind!r}")
    fields = {key: value for key, value in data.items() if key != "kind"}
    if kind == "front":
        fields["enabled"] = tuple(fields["enabled"])
    action: FleetAction = ACTION_TYPES[kind](**fields)
    return action


@dataclass(frozen=True, slots=True)
class Retry:
    """A host whose step did not take, tried again with backoff."""

    host: str
    made: int
    """Attempts made (or spent while it did not answer) so far, the first call included."""
    due: float
    """When the next attempt may go."""
    reason: str
    """Why the last attempt did not take; "" once the host moves again (the count stays)."""

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "made": self.made, "due": self.due, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Retry:
        return cls(str(data["host"]), int(data["made"]), float(data["due"]), str(data["reason"]))


@dataclass(frozen=True, slots=True)
class FleetState:
    phase: str
    phase_started_at: float
    done: tuple[str, ...] = ()
    """Hosts that serve the candidate and are back at the front."""
    batch: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    """Hosts given up on (``on_host_lost = "continue"``): drained, converged when back."""
    paused: str = ""
    """Why the rollout waits for an operator ("" while it runs)."""
    reason: str = ""
    retries: tuple[Retry, ...] = ()
    """Hosts of the current step that are being retried (cleared when the step ends)."""

    def enter(self, phase: str, now: float, **changes: Any) -> FleetState:
        return replace(self, phase=phase, phase_started_at=now, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "phase_started_at": self.phase_started_at,
            "done": list(self.done),
            "batch": list(self.batch),
            "lost": list(self.lost),
            "paused": self.paused,
            "reason": self.reason,
            "retries": [retry.to_dict() for retry in self.retries],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FleetState:
        return cls(
            phase=str(data["phase"]),
            phase_started_at=float(data["phase_started_at"]),
            done=tuple(data.get("done", ())),
            batch=tuple(data.get("batch", ())),
            lost=tuple(data.get("lost", ())),
            paused=str(data.get("paused", "")),
            reason=str(data.get("reason", "")),
            retries=tuple(Retry.from_dict(r) for r in data.get("retries", ())),
        )


@dataclass(frozen=True, slots=True)
class FleetDecision:
    state: FleetState
    actions: tuple[FleetAction, ...] = ()
    events: tuple[str, ...] = ()
    wake_in: float | None = TICK

    @property
    def finished(self) -> FleetFinish | None:
        return next((a for a in self.actions if isinstance(a, FleetFinish)), None)


def start(spec: FleetSpec, now: float) -> FleetState:
    first = PREPARE if spec.strategy == "bluegreen" else BATCH
    return FleetState(first, now)


def decide(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> FleetDecision:
    if state.phase == BACK:
        return pinning(spec, state, observed) or rolling_back(spec, state, observed)
    if observed.command == "abort":
        return abort(spec, state, observed, "aborted by an operator")
    if state.paused:
        if observed.command != "resume":
            return FleetDecision(state, wake_in=None)
        # A fresh budget of attempts: the operator says the hosts are worth trying again.
        state = replace(state, paused="", phase_started_at=observed.now, retries=())
    phases = {
        BATCH: batch,
        WAIT: wait,
        ANALYSIS: analysis,
        PREPARE: prepare,
        PIN: promote_all,
        SWITCH: switch,
    }
    return pinning(spec, state, observed) or phases[state.phase](spec, state, observed)


def pin_for(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> str | None:
    """The release the edge should stamp in this phase.

    Worked examples (edge_switch, v1 -> v2 blue-green): prepare keeps v1 (or no stamp: each
    host's table serves v1 either way); pin and switch want v2; rolling back wants v1. A
    rollback to v1 wants v1 from its first batch (users are back at once, the hosts follow);
    its abort wants v2 again. Rolling and canary want no stamp: their hosts move one by one,
    and a host whose pinned release stopped would fail the edge's check of it.

    A release is pinned only while every host that answers has ready instances of it: a host
    without them fails the edge's check and leaves rotation, so pinning, say, v1 after two
    hosts retired it (``keep_previous`` elapsed during a long switch) would send all traffic
    to the others while those two rebuild it. Then no stamp: each host's own table serves, as
    each host moves back."""
    if not spec.edge_switch or (spec.strategy != "bluegreen" and not spec.rollback):
        return None
    if state.phase == BACK:
        wanted = spec.stable
    elif state.phase == PREPARE:
        wanted = observed.pinned if observed.pinned in (None, spec.stable) else spec.stable
    else:
        wanted = spec.candidate
    return wanted if wanted is None or warm_everywhere(spec, observed, wanted) else None


def warm_everywhere(spec: FleetSpec, observed: FleetObserved, release: str) -> bool:
    """Every host that answers has ready instances of ``release`` (held, active or warm)."""
    views = [observed.host(h) for h in spec.hosts]
    return all(release in view.warm for view in views if view.reachable)


def pinning(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> FleetDecision | None:
    """The pin this phase wants, while the edge stamps anything else; None once it does."""
    wanted = pin_for(spec, state, observed)
    if observed.pinned == wanted:
        return None
    event = f"the edge sends every request to {wanted}" if wanted else "the edge stops pinning"
    return FleetDecision(state, (EdgePin(wanted),), (event,))


def serving(spec: FleetSpec, state: FleetState) -> tuple[str, ...]:
    """Hosts the front should send to: all but the current batch and the lost."""
    return tuple(h for h in spec.hosts if h not in state.batch and h not in state.lost)


def on_release(view: HostView, release: str) -> bool:
    """The host serves ``release``, with no rollout of its own still moving."""
    return view.reachable and view.active == release and view.rollout is None


def next_batch(spec: FleetSpec, state: FleetState) -> tuple[str, ...]:
    left = [h for h in spec.hosts if h not in state.done and h not in state.lost]
    if spec.strategy == "canary" and not state.done:
        return tuple(h for h in left if h in spec.canary)
    return tuple(left[: spec.max_unavailable])


def edge_errors(spec: FleetSpec, observed: FleetObserved) -> str:
    """Why the candidate's error rate at the front (since the phase started) fails, or ""."""
    counts = observed.measurements.get(spec.candidate, ReleaseCounts())
    if counts.requests < spec.min_requests or not counts.above(spec.max_error_rate):
        return ""
    return (
        f"{spec.candidate} at the front: {counts.errors}/{counts.requests} errors "
        f"({counts.error_rate:.1%}) > {spec.max_error_rate:.1%}"
    )


def batch(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> FleetDecision:
    failing = edge_errors(spec, observed)
    if failing:
        return abort(spec, state, observed, failing)
    if not state.batch:
        chosen = next_batch(spec, state)
        if not chosen:
            return finish_completed(spec, state)
        state = state.enter(BATCH, observed.now, batch=chosen)
        moves = tuple(HostDeploy(h, spec.candidate) for h in chosen)
        return FleetDecision(
            state, (FrontHosts(serving(spec, state)), *moves), (f"batch {', '.join(chosen)}",)
        )
    problem = batch_problem(spec, state, observed)
    if problem:
        return abort(spec, state, observed, problem)
    step = retry_step(spec, state, observed, moving_to(spec.candidate), deploying(spec))
    if step.exhausted:
        return host_trouble(spec, step.state, observed, step.problem, step.events, step.exhausted)
    if not all(on_release(observed.host(h), spec.candidate) for h in state.batch):
        return FleetDecision(step.state, step.actions, step.events)
    return batch_done(spec, step.state, observed, step.events)


def batch_problem(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> str:
    """A host's own verdict (its rollout failed), or the deadline: not retried."""
    for name in state.batch:
        view = observed.host(name)
        if view.failed and view.reachable:
            return f"host {name} failed to serve {spec.candidate}: {view.failed}"
    waited = observed.now - state.phase_started_at
    if waited > spec.deadline:
        return f"batch {', '.join(state.batch)} not serving {spec.candidate} after {waited:.0f}s"
    return ""


@dataclass(frozen=True, slots=True)
class Step:
    """What the retries of a step decided this tick."""

    state: FleetState
    actions: tuple[FleetAction, ...] = ()
    events: tuple[str, ...] = ()
    exhausted: tuple[str, ...] = ()
    """Hosts out of attempts, still not moving."""
    problem: str = ""
    """Why, for the first of them (the policy's reason)."""


def moving_to(release: str) -> Callable[[HostView], bool]:
    """The host's step took: it serves ``release`` or its own rollout moves there."""
    return lambda view: view.reachable and (view.active == release or view.rollout == release)


def switching_to(release: str) -> Callable[[HostView], bool]:
    """The promote took: the host serves ``release`` or its rollout no longer holds it."""
    return lambda view: (
        view.reachable and (view.active == release or (view.rollout == release and not view.held))
    )


def deploying(spec: FleetSpec, *, hold: bool = False) -> tuple[str, Callable[[str], FleetAction]]:
    verb = f"{'start' if hold else 'deploy'} {spec.candidate}"
    return verb, lambda host: HostDeploy(host, spec.candidate, hold=hold)


def retry_step(
    spec: FleetSpec,
    state: FleetState,
    observed: FleetObserved,
    took: Callable[[HostView], bool],
    action: tuple[str, Callable[[str], FleetAction]],
) -> Step:
    """Each host of ``state.batch`` whose step did not take (``took`` is false, and its own
    rollout did not fail) is tried again: after ``spec.backoff(made)`` seconds, while it
    answers; an attempt falling due while it does not answer is spent without a call. Past
    ``spec.attempts`` it is exhausted and the caller applies the policy."""
    verb, make = action
    now, total = observed.now, spec.attempts
    records = {r.host: r for r in state.retries}
    actions: list[FleetAction] = []
    events: list[str] = []
    exhausted: list[str] = []
    problem = ""
    for name in state.batch:
        view = observed.host(name)
        record = records.get(name)
        if view.failed and view.reachable:
            continue  # the host's own verdict: the caller judges it, no retry
        if view.calling:
            continue  # its call is in flight: it took or it fails, then judged
        if took(view):
            if record is not None and record.reason:
                records[name] = replace(record, reason="")
                events.append(f"{name}: {verb} took on attempt {record.made} of {total}")
            continue
        why = trouble_of(view, spec)
        if record is None or not record.reason:
            made = record.made if record else 1
            record = Retry(name, made, now + spec.backoff(made), why)
            if made < total:
                wait = spec.backoff(made)
                events.append(
                    f"{name}: {verb} did not take (attempt {made} of {total}): {why}; "
                    f"retrying in {wait:g}s"
                )
        elif view.trouble or not view.reachable:
            record = replace(record, reason=why)  # the latest word on it
        while now >= record.due and not view.reachable and record.made < total:
            made = record.made + 1
            record = Retry(name, made, record.due + spec.backoff(made), why)
            events.append(f"{name}: attempt {made} of {total} not made: {why}")
        if record.made >= total:
            if now >= record.due or not spec.retries:  # the last one had its time to take
                exhausted.append(name)
                problem = problem or exhausted_problem(spec, view, record)
        elif now >= record.due:  # it answers (attempts due while it did not were spent)
            made = record.made + 1
            record = Retry(name, made, now + spec.backoff(made), record.reason)
            actions.append(make(name))
            events.append(f"{name}: attempt {made} of {total}: {verb} ({record.reason})")
        records[name] = record
    retries = tuple(records[h] for h in state.batch if h in records)
    return Step(
        replace(state, retries=retries), tuple(actions), tuple(events), tuple(exhausted), problem
    )


def trouble_of(view: HostView, spec: FleetSpec) -> str:
    if not view.reachable:
        return f"unreachable: {view.trouble}" if view.trouble else "unreachable"
    if view.trouble:
        return view.trouble
    if view.held and view.rollout == spec.candidate:
        return f"it still holds {spec.candidate} unswitched"
    if view.rollout and view.rollout != spec.candidate:
        return f"its agent runs a rollout to {view.rollout}"
    return f"its agent shows no rollout to {spec.candidate}"


def exhausted_problem(spec: FleetSpec, view: HostView, record: Retry) -> str:
    """The policy's reason for a host out of attempts."""
    if not view.reachable:
        if not spec.retries:
            return f"host {view.name} is unreachable"
        detail = f": {view.trouble}" if view.trouble else ""
        return f"host {view.name} is unreachable after {record.made} attempts{detail}"
    tried = f" after {record.made} attempts" if spec.retries else ""
    return f"host {view.name} did not take {spec.candidate}{tried}: {record.reason}"


def batch_done(
    spec: FleetSpec, state: FleetState, observed: FleetObserved, before: tuple[str, ...] = ()
) -> FleetDecision:
    moved = state.batch
    state = state.enter(WAIT, observed.now, done=(*state.done, *moved), batch=(), retries=())
    events = (*before, f"{', '.join(moved)} serve {spec.candidate}")
    front = FrontHosts(serving(spec, state))
    if spec.strategy == "canary" and state.done == tuple(h for h in spec.hosts if h in spec.canary):
        state = state.enter(ANALYSIS, observed.now)
        return FleetDecision(state, (front,), (*events, "analysis on the canary hosts"))
    if not next_batch(spec, state):
        return FleetDecision(state, (front,), events, wake_in=0)
    return FleetDecision(state, (front,), events, wake_in=spec.batch_wait)


def wait(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> FleetDecision:
    failing = edge_errors(spec, observed)
    if failing:
        return abort(spec, state, observed, failing)
    remaining = spec.batch_wait - (observed.now - state.phase_started_at)
    if remaining > 0 and next_batch(spec, state):
        return FleetDecision(state, wake_in=remaining)
    return batch(spec, state.enter(BATCH, observed.now), observed)


def analysis(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> FleetDecision:
    counts = observed.measurements.get(spec.candidate, ReleaseCounts())
    for name in state.done:
        if not observed.host(name).reachable:
            return abort(spec, state, observed, f"canary host {name} is unreachable")
    measured = f"{counts.errors}/{counts.requests} errors ({counts.error_rate:.1%})"
    if counts.requests >= spec.min_requests and counts.above(spec.max_error_rate):
        why = f"canary analysis failed: {measured} > {spec.max_error_rate:.1%}"
        return abort(spec, state, observed, why)
    elapsed = observed.now - state.phase_started_at
    enough = counts.requests >= spec.min_requests
    if elapsed < spec.analysis_duration or not enough or counts.error_rate > spec.max_error_rate:
        if elapsed > spec.deadline:
            why = f"canary analysis undecided after {elapsed:.0f}s: {measured}"
            return abort(spec, state, observed, why)
        return FleetDecision(state)
    event = f"canary analysis passed: {measured} <= {spec.max_error_rate:.1%}"
    return FleetDecision(state.enter(BATCH, observed.now), (), (event,), wake_in=0)


def prepare(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> FleetDecision:
    if not state.batch:
        state = state.enter(PREPARE, observed.now, batch=spec.hosts)
        moves = tuple(HostDeploy(h, spec.candidate, hold=True) for h in spec.hosts)
        return FleetDecision(state, moves, ("every host starts " + spec.candidate,))
    problem = batch_problem(spec, state, observed)
    if problem:
        return abort(spec, state, observed, problem)
    step = retry_step(spec, state, observed, moving_to(spec.candidate), deploying(spec, hold=True))
    if step.exhausted:
        return prefixed(step.events, abort(spec, step.state, observed, step.problem))
    if not all(observed.host(h).held for h in spec.hosts):
        return FleetDecision(step.state, step.actions, step.events)
    if spec.edge_switch:  # one change at the edge first (decision 0581), then the hosts
        state = step.state.enter(PIN, observed.now, retries=())
        events = (*step.events, "every host holds it ready: switching all at the edge")
        return FleetDecision(state, (EdgePin(spec.candidate),), events)
    state = step.state.enter(SWITCH, observed.now, retries=())
    promote = tuple(HostPromote(h) for h in spec.hosts)
    events = (*step.events, "every host holds it ready: switching all")
    return FleetDecision(state, promote, events)


def promote_all(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> FleetDecision:
    """The edge pins the candidate (``pinning`` held this phase until it did): every user is
    on it now, so each host is promoted to say so in its own state and run its watch."""
    state = state.enter(SWITCH, observed.now, retries=())
    promote = tuple(HostPromote(h) for h in spec.hosts)
    return FleetDecision(state, promote, ("promoting every host",))


def switch(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> FleetDecision:
    if all(on_release(observed.host(h), spec.candidate) for h in spec.hosts):
        state = state.enter(WAIT, observed.now, done=spec.hosts, batch=(), retries=())
        return finish_completed(spec, state)
    for name in spec.hosts:
        view = observed.host(name)
        if view.failed and view.reachable:
            return abort(spec, state, observed, f"host {name} failed to switch: {view.failed}")
    waited = observed.now - state.phase_started_at
    if waited > spec.deadline:
        return abort(spec, state, observed, f"not every host switched after {waited:.0f}s")
    promoting = (f"promote {spec.candidate}", HostPromote)
    step = retry_step(spec, state, observed, switching_to(spec.candidate), promoting)
    if step.exhausted:
        return prefixed(step.events, abort(spec, step.state, observed, step.problem))
    return FleetDecision(step.state, step.actions, step.events)


def prefixed(events: tuple[str, ...], decision: FleetDecision) -> FleetDecision:
    return replace(decision, events=(*events, *decision.events)) if events else decision


def host_trouble(
    spec: FleetSpec,
    state: FleetState,
    observed: FleetObserved,
    problem: str,
    events: tuple[str, ...] = (),
    hosts: tuple[str, ...] = (),
) -> FleetDecision:
    """Hosts of the batch out of attempts (``hosts``), or a failure: a host that does not
    answer pauses the rollout or is left behind (``on_host_lost``); anything else, or a canary
    host, rolls back."""
    lost = [h for h in hosts if not observed.host(h).reachable]
    if not hosts or len(lost) < len(hosts) or spec.strategy == "canary":
        return prefixed(events, abort(spec, state, observed, problem))
    if spec.on_host_lost == "continue":
        state = replace(state, lost=(*state.lost, *lost), batch=(), retries=())
        events = (
            *events,
            f"{problem}: drained, carrying on without it (on_host_lost = continue)",
        )
        return FleetDecision(state, (FrontHosts(serving(spec, state)),), events, wake_in=0)
    paused = f"{problem}: paused (`nonstop fleet resume` or `nonstop fleet abort`)"
    return FleetDecision(replace(state, paused=paused), (), (*events, paused), wake_in=None)


def abort(spec: FleetSpec, state: FleetState, observed: FleetObserved, why: str) -> FleetDecision:
    """Every host back on the stable release; nobody left on a mixed version."""
    if spec.stable is None:
        finish = FleetFinish("aborted", f"{why}; no previous release to go back to")
        return FleetDecision(state, (finish,), (why,), wake_in=None)
    state = state.enter(BACK, observed.now, reason=why, paused="", retries=())
    pin = pin_for(spec, state, observed)
    first = (EdgePin(pin),) if pin != observed.pinned else ()  # every user back at once
    actions = [back_action(spec, state, observed.host(h)) for h in spec.hosts]
    moves = tuple(a for a in actions if a)
    return FleetDecision(state, (*first, *moves), (f"{why}: rolling back",))


def back_action(spec: FleetSpec, state: FleetState, view: HostView) -> FleetAction | None:
    assert spec.stable is not None
    if view.held or (view.rollout == spec.candidate and view.active == spec.stable):
        return HostAbort(view.name)  # not switched yet: stop its rollout, stable serves
    if view.active == spec.stable and view.rollout is None and view.reachable:
        return None
    return HostDeploy(view.name, spec.stable, rollback=True)


def rolling_back(spec: FleetSpec, state: FleetState, observed: FleetObserved) -> FleetDecision:
    """Every host back on the stable release. A host that does not answer is drained at the
    front (``lost``) and waited for up to ``deadline`` seconds: when it answers again it is
    sent back too, and only once it serves the stable release is it put back at the front.
    A host whose deploy call is still in flight is not back yet: when the call ends, the rollout
    it may have started shows, and is sent back in turn."""
    assert spec.stable is not None
    back = tuple(
        h
        for h in spec.hosts
        if on_release(observed.host(h), spec.stable) and not observed.host(h).calling
    )
    away = tuple(h for h in spec.hosts if not observed.host(h).reachable)
    idle = [observed.host(h) for h in spec.hosts if h not in back and h not in away]
    redo = (back_action(spec, state, view) for view in idle if view.rollout is None)
    moves = tuple(a for a in redo if a)
    lost = tuple(h for h in spec.hosts if h in away or (h in state.lost and h not in back))
    state, changes, events = relost(spec, state, lost)
    waited = observed.now - state.phase_started_at
    if len(back) + len(away) < len(spec.hosts) or (away and waited < spec.deadline):
        return FleetDecision(state, (*changes, *moves), events)
    front = FrontHosts(tuple(h for h in spec.hosts if h not in away))
    reason = state.reason
    if away:
        reason += f"; {', '.join(away)} unreachable: drained, back on {spec.stable} when it answers"
    finish = FleetFinish("rolled_back", reason)
    return FleetDecision(state, (front, finish), events, wake_in=None)


def relost(
    spec: FleetSpec, state: FleetState, lost: tuple[str, ...]
) -> tuple[FleetState, tuple[FleetAction, ...], tuple[str, ...]]:
    """The rollback's drained hosts become ``lost``: the front leaves them out, and each change
    is an event (a host returned is noted in the reason too)."""
    if lost == state.lost:
        return state, (), ()
    events = []
    gone = [h for h in lost if h not in state.lost]
    if gone:
        events.append(
            f"{', '.join(gone)} unreachable: drained at the front, back on {spec.stable} once "
            f"it answers (waiting up to {spec.deadline:.0f}s)"
        )
    returned = [h for h in state.lost if h not in lost]
    reason = state.reason
    if returned:
        note = f"{', '.join(returned)} back on {spec.stable} once it answered again"
        events.append(note)
        reason += f"; {note}"
    front = FrontHosts(tuple(h for h in spec.hosts if h not in lost))
    return replace(state, lost=lost, reason=reason), (front,), tuple(events)


def finish_completed(spec: FleetSpec, state: FleetState) -> FleetDecision:
    front = FrontHosts(serving(spec, state))
    note = f" ({', '.join(state.lost)} lost: drained)" if state.lost else ""
    finish = FleetFinish("completed", f"every host serves {spec.candidate}{note}")
    return FleetDecision(state, (front, finish), wake_in=None)


def rollback_problem(target: str, hosts: Sequence[HostView]) -> str | None:
    """Why the fleet cannot roll back to ``target`` at once, or None: it must be present and
    warm (ready instances) on every host, so going back builds and starts nothing."""
    lacking = [h.name for h in hosts if target not in h.warm or not h.reachable]
    if not lacking:
        return None
    return (
        f"release {target} is not warm on {', '.join(lacking)}: a fleet rollback only targets a "
        "release every host still runs; deploy it instead (`nonstop fleet deploy " + target + "`)"
    )
