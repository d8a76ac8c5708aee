"""How a leaving instance's work ends before it is stopped: a registry of small drainers.

The engine takes a leaving instance out of the routing table, then asks its role's drainer two
things each tick: until when it may drain (its deadline) and how much work it still has (from
what the router reports: requests and streams in flight per address, and the addresses of the
last table the router accepted). It is stopped once it has none, or at the deadline.

- ``connections`` (a routed role: web): the router's in-flight count, plus one while the
  address is still in the router's accepted table; the deadline is ``drain_timeout``.
- ``quiet`` (a role without a port: workers): no connections to wait for; the role's quiet
  step goes out first (it takes no new jobs) and its stop rules do the rest, since a worker's
  running jobs are the program's to finish after its stop signal, within ``stop_timeout``.

Nothing here reads a process: a drainer sees addresses and counts, whatever runs the instance.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Protocol


class Drainer(Protocol):
    @property
    def quiets(self) -> bool:
        """The role's quiet step is sent when draining begins."""

    def deadline(self, now: float, drain_timeout: float) -> float:
        """When the instance is stopped whatever it still has in flight."""

    def busy(self, address: str, in_flight: Mapping[str, int], routed: Set[str]) -> int:
        """Work the instance still has (0: it may stop)."""


@dataclass(frozen=True, slots=True)
class Connections:
    quiets: bool = False

    def deadline(self, now: float, drain_timeout: float) -> float:
        return now + drain_timeout

    def busy(self, address: str, in_flight: Mapping[str, int], routed: Set[str]) -> int:
        return in_flight.get(address, 0) + (1 if address in routed else 0)


@dataclass(frozen=True, slots=True)
class Quiet:
    quiets: bool = True

    def deadline(self, now: float, drain_timeout: float) -> float:
        return now

    def busy(self, address: str, in_flight: Mapping[str, int], routed: Set[str]) -> int:
        return 0


DRAINERS: dict[str, Drainer] = {"connections": Connections(), "quiet": Quiet()}


def drainer_for(routed: bool) -> Drainer:
    """The drainer of a role: ``connections`` when the router sends it traffic."""
    return DRAINERS["connections" if routed else "quiet"]
