"""A release kept warm for rollback: when its instances get the web role's quiet step.

Blue-green keeps the previous release running for ``keep_previous`` after the switch, out of
the route table, so a rollback is instant. Its HTTP traffic is gone within the drain timeout,
but long-lived connections (WebSockets) stay until it retires. With ``[app] quiet_signal`` or
``quiet_command`` set, each of its web instances is told once, at the drain deadline (the
switch + ``drain_timeout``), to close those connections; it keeps answering HTTP.

The state is one stored map, release -> :class:`WarmQuiet`, written with the weight change
that takes the release out of the table (:func:`switched`, in one transaction with the new
weights, so the deadline counts from the switch) and read every tick, so an agent restart
neither forgets a due quiet step nor repeats a done one. The step does not wait for the
rollout that switched to end its watch (decision 0510): the clients it closes reconnect to
the new release minutes earlier, and their closes are not traffic the watch judges (upgraded
streams are counted apart from requests). Only a rollout whose candidate is the warm release
(a rollback to it) holds the step back.

- an instance is recorded in ``sent`` once the step was delivered (at least once: a restart
  between the delivery and the record sends it again, to an instance that is out of the
  route table and so has no new connection to lose);
- the entry goes when a switch routes to the release again (a rollback: its new connections
  must stay) or it retires.

Worked example, switch from v1 to v2 at t=100, drain_timeout 30::

    t=120  {"v1": at 130, sent []}          -> nothing yet
    t=131  v1-1, v1-2 warm                  -> quiet v1-1, v1-2
    t=132  sent [v1-1]                      -> quiet v1-2 only
    t=133  rollback to v1 runs (involved)   -> nothing
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class WarmQuiet:
    at: float
    """When the release's drain deadline passes."""
    sent: tuple[str, ...] = field(default=())
    """Instances that got the quiet step."""

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "sent": list(self.sent)}

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> WarmQuiet:
        return cls(float(value["at"]), tuple(str(i) for i in value.get("sent", ())))


def load(value: object) -> dict[str, WarmQuiet]:
    """The stored map (``None`` or a JSON object) as :class:`WarmQuiet` entries."""
    if not isinstance(value, Mapping):
        return {}
    return {str(name): WarmQuiet.of(entry) for name, entry in value.items()}


def dump(entries: Mapping[str, WarmQuiet]) -> dict[str, Any]:
    return {name: entry.to_dict() for name, entry in entries.items()}


def due(
    entries: Mapping[str, WarmQuiet],
    warm: Iterable[tuple[str, str]],
    involved: Set[str | None],
    now: float,
) -> list[str]:
    """The instance ids to quiet now, from ``warm``: ``(instance id, release)`` of every
    running web instance of a release out of the route table; ``involved`` holds the running
    rollout's candidate: a rollback to a warm release must keep its connections. The stable
    release of a rollout still watching is not held back: should the watch fail, its clients
    move twice (to the new release and back), the price of moving them at the drain deadline
    instead of at the end of a watch of minutes in every deploy that succeeds.

    >>> entries = {"v1": WarmQuiet(130.0, ("v1-1",))}
    >>> due(entries, [("v1-1", "v1"), ("v1-2", "v1"), ("v2-1", "v2")], set(), 131.0)
    ['v1-2']
    >>> due(entries, [("v1-2", "v1")], set(), 129.0)
    []
    >>> due(entries, [("v1-2", "v1")], {"v1"}, 131.0)
    []
    """
    found = []
    for instance, release in warm:
        entry = entries.get(release)
        if entry is None or release in involved or entry.at > now:
            continue
        if instance not in entry.sent:
            found.append(instance)
    return sorted(found)


def mark_sent(
    entries: Mapping[str, WarmQuiet], release: str, instance: str
) -> dict[str, WarmQuiet]:
    """``entries`` with ``instance`` recorded as quieted (unchanged when the release's entry
    is gone meanwhile)."""
    entry = entries.get(release)
    if entry is None or instance in entry.sent:
        return dict(entries)
    return {**entries, release: WarmQuiet(entry.at, (*entry.sent, instance))}


def switched(
    entries: Mapping[str, WarmQuiet],
    before: Mapping[str, int],
    after: Mapping[str, int],
    candidate: str,
    now: float,
    drain: Callable[[str], float],
) -> dict[str, WarmQuiet]:
    """``entries`` after a weight change from ``before`` to ``after``: a release that had
    traffic and has none now (the rollout's candidate aside: it is only being given up) is due
    at ``now + drain(release)``, keeping an entry it has; a release with traffic has none.

    >>> drain = lambda release: 30.0
    >>> switched({}, {"v1": 100}, {"v2": 100}, "v2", 100.0, drain)
    {'v1': WarmQuiet(at=130.0, sent=())}
    >>> switched({"v1": WarmQuiet(130.0)}, {"v2": 100}, {"v1": 100}, "v2", 140.0, drain)
    {}
    """
    found = {name: entry for name, entry in entries.items() if after.get(name, 0) <= 0}
    for name, weight in before.items():
        if weight > 0 and after.get(name, 0) <= 0 and name != candidate:
            found.setdefault(name, WarmQuiet(now + drain(name)))
    return found


def keep_only(entries: Mapping[str, WarmQuiet], releases: Set[str]) -> dict[str, WarmQuiet]:
    """The entries of ``releases`` (those still kept warm)."""
    return {name: entry for name, entry in entries.items() if name in releases}
