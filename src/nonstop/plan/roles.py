"""Process roles that take no traffic (workers): which release runs them, and how many.

The web role (``[app]``) is moved by the strategy planners. Every other role of a release
follows it, from a rule that needs no state of its own (so replaying or restarting the agent
lands in the same place):

1. **The leading release** (:func:`leading_release`) is the one whose workers should run: the
   candidate of a blue-green or rolling rollout from its start, the candidate of a canary once
   its web role has all the traffic, and the stable release again when a rollout gives up
   (the candidate is no longer wanted); with no rollout, the active release.
2. **Counts** (:func:`role_targets`): the leading release gets the role's ``replicas``. The
   others keep what they run until the leader's instances are ready, then go: all at once
   (blue-green, canary: start new, wait ready, quiet old, stop old), or a few at a time within
   ``max_surge`` / ``max_unavailable`` of ``[strategy.rolling]`` resolved against the role's
   own replicas (rolling).
3. **Readiness gates the web role** (:func:`pending`): a candidate whose workers are not all
   ready counts no ready web instance, so no strategy moves traffic to a release whose jobs
   nobody would run, and a worker that fails aborts the rollout like a web instance.

Worked example, ``worker`` with 2 replicas, blue-green from v1 to v2::

    t0  leader v2     v2: 0 of 2    -> v2 2, v1 2     both run; v1 keeps taking jobs
    t1  v2 2 ready                  -> v2 2, v1 0     v1's workers are quieted and stop
    t2  smoke, switch ...           (web only; workers already moved)

Rolling, 4 replicas, max_surge 1, max_unavailable 0::

    t0  v1 4 ready, v2 0            -> v2 1, v1 4     at most 5
    t1  v2 1 ready                  -> v2 1, v1 3     at least 4 ready
    t2  v1 3 (one stopping), v2 1   -> v2 2, v1 3     ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from nonstop.config.units import resolve_count

Strategy = Literal["bluegreen", "rolling", "canary"]


@dataclass(frozen=True, slots=True)
class RolloutView:
    """The part of a running rollout the role rule reads."""

    strategy: Strategy
    candidate: str
    stable: str | None
    phase: str


@dataclass(frozen=True, slots=True)
class RoleCount:
    """Instances of one role of one release: not leaving, and of those the ready ones."""

    serving: int = 0
    ready: int = 0


@dataclass(frozen=True, slots=True)
class RoleBudget:
    replicas: int
    surge: int = 0
    unavailable: int = 0
    all_at_once: bool = True

    @classmethod
    def rolling(cls, replicas: int, max_surge: str, max_unavailable: str) -> RoleBudget:
        """Rolling budget of one role, as the web role's (both 0 means surge 1).

        >>> RoleBudget.rolling(4, "25%", "0")
        RoleBudget(replicas=4, surge=1, unavailable=0, all_at_once=False)
        >>> RoleBudget.rolling(3, "0", "0").surge
        1
        """
        surge = resolve_count(max_surge, replicas, round_up=True)
        unavailable = resolve_count(max_unavailable, replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            surge = 1
        return cls(replicas, surge, unavailable, all_at_once=False)


def leading_release(
    rollout: RolloutView | None,
    active: str | None,
    desired: Mapping[str, int],
    weights: Mapping[str, int] | None,
) -> str | None:
    """The release whose non-web roles should run now (see the module docstring).

    >>> bg = RolloutView("bluegreen", "v2", "v1", "starting")
    >>> leading_release(bg, "v1", {"v1": 2, "v2": 2}, {"v1": 100})
    'v2'
    >>> leading_release(bg, "v1", {"v1": 2}, {"v1": 100})  # the candidate was given up
    'v1'
    >>> canary = RolloutView("canary", "v2", "v1", "analysing")
    >>> leading_release(canary, "v1", {"v1": 2, "v2": 1}, {"v1": 90, "v2": 10})
    'v1'
    >>> leading_release(canary, "v1", {"v1": 2, "v2": 2}, {"v2": 100})
    'v2'
    """
    if rollout is None:
        return active
    giving_up = rollout.candidate not in desired or rollout.phase == "rolling_back"
    if giving_up and rollout.stable is not None:
        return rollout.stable
    if rollout.strategy == "canary" and rollout.stable is not None:
        promoted = weights is not None and weights.get(rollout.candidate, 0) >= 100
        return rollout.candidate if promoted else rollout.stable
    return rollout.candidate


def role_targets(
    leader: str | None, budget: RoleBudget, counts: Mapping[str, RoleCount]
) -> dict[str, int]:
    """How many instances of one role each release should run: ``counts`` holds every
    release that runs some (the leader may be missing), newest first; releases left out of
    the answer run none."""
    if leader is None:
        return {}
    new = counts.get(leader, RoleCount())
    others = [(name, count) for name, count in counts.items() if name != leader]
    old_serving = sum(count.serving for _, count in others)
    if budget.all_at_once:
        keep = 0 if new.ready >= budget.replicas else old_serving
        return {leader: budget.replicas, **_share(keep, others)}
    room = budget.replicas + budget.surge - old_serving
    start = min(budget.replicas, max(new.serving, room))
    keep = min(old_serving, max(0, budget.replicas - budget.unavailable - new.ready))
    return {leader: start, **_share(keep, others)}


def _share(keep: int, others: Sequence[tuple[str, RoleCount]]) -> dict[str, int]:
    """``keep`` instances spread over the old releases, newest first, none above what it has."""
    shares = {}
    for name, count in others:
        take = min(keep, count.serving)
        keep -= take
        if take:
            shares[name] = take
    return shares


def pending(budgets: Mapping[str, RoleBudget], counts: Mapping[str, RoleCount]) -> str:
    """What a release still misses for its non-web roles to be ready ("worker has 1/2
    ready"), or "" when every role is; ``budgets`` and ``counts`` are the release's, by role.

    >>> pending({"worker": RoleBudget(2)}, {"worker": RoleCount(2, 1)})
    'worker has 1/2 ready'
    >>> pending({"worker": RoleBudget(2), "beat": RoleBudget(0)}, {"worker": RoleCount(2, 2)})
    ''
    """
    missing = [
        f"{role} has {counts.get(role, RoleCount()).ready}/{budget.replicas} ready"
        for role, budget in sorted(budgets.items())
        if counts.get(role, RoleCount()).ready < budget.replicas
    ]
    return ", ".join(missing)
