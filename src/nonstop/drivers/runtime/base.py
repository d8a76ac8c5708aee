"""The runtime port: start, watch and stop instances of a release.

Local processes are the default adapter (drivers/runtime/local.py); ssh hosts and Kubernetes
implement the same port later. Handles are plain data persisted in the store, so a restarted
agent re-adopts instances it did not start itself (checking pid *and* start time, so a recycled
pid is never mistaken for ours).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

KillMode = Literal["main", "group"]


@dataclass(frozen=True, slots=True)
class StopRules:
    """How an instance is asked to stop, and when it is made to (docs/workers.md).

    ``kill_mode`` "main" sends ``signal`` to the instance's main process only (its children,
    a worker pool say, are the program's to end); "group" sends it to the whole process group.
    At ``timeout`` every process of the instance, children that left its group included, is
    killed. ``quiet_signal`` / ``quiet_command`` stop intake (no new jobs) ahead of the stop."""

    signal: str = "SIGTERM"
    timeout: float = 10.0
    kill_mode: KillMode = "main"
    quiet_signal: str | None = None
    quiet_command: str | None = None


@dataclass(frozen=True, slots=True)
class StopReport:
    """What a stop did: whether the deadline's SIGKILL was needed, and which processes had
    left the instance's process group (found through its tag or parentage) and were killed."""

    killed: bool = False
    escaped: tuple[int, ...] = ()

    def describe(self, instance_id: str) -> str:
        """One sentence for the events, or "" when the program ended on its own in time."""
        if self.escaped:
            pids = ", ".join(str(pid) for pid in self.escaped)
            return (
                f"{instance_id}: killed {len(self.escaped)} process(es) that had left its "
                f"process group at the stop deadline (pid {pids})"
            )
        if self.killed:
            return f"{instance_id}: still running at the stop deadline; killed"
        return ""


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    instance_id: str
    release: str
    command: str
    """The release's command with ``{port}`` still in it; the runtime fills the port in."""
    cwd: str
    env: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0
    kill_mode: KillMode = "main"
    log_path: str | None = None
    port: int | None = None
    """A fixed port; None picks a free one."""


@dataclass(frozen=True, slots=True)
class InstanceHandle:
    instance_id: str
    release: str
    pid: int
    port: int
    host: str = "127.0.0.1"
    start_marker: str = ""
    """Identifies this exact process across agent restarts (locally: /proc start time)."""
    started_at: float = 0.0
    tag: str = ""
    """A value unique to this run, in every process's environment as NONSTOP_RUN: children
    that leave the process group (setsid, setpgrp) are still found by it."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "release": self.release,
            "pid": self.pid,
            "port": self.port,
            "host": self.host,
            "start_marker": self.start_marker,
            "started_at": self.started_at,
            "tag": self.tag,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceHandle:
        return cls(
            instance_id=str(data["instance_id"]),
            release=str(data["release"]),
            pid=int(data["pid"]),
            port=int(data["port"]),
            host=str(data.get("host", "127.0.0.1")),
            start_marker=str(data.get("start_marker", "")),
            started_at=float(data.get("started_at", 0.0)),
            tag=str(data.get("tag", "")),
        )


class Runtime(Protocol):
    async def start(self, spec: InstanceSpec) -> InstanceHandle:
        """Start one instance. Raises RuntimeDriverError with the reason (and the tail of its
        output) when it cannot be started at all."""

    async def stop(
        self, handle: InstanceHandle, signal: str, timeout: float, *, kill_mode: KillMode = "main"
    ) -> StopReport:
        """Send ``signal`` (to the main process, or the group with ``kill_mode="group"``);
        at ``timeout`` kill every process of the instance, escaped children included.
        Idempotent: an instance that is already gone is fine."""

    async def quiet(self, handle: InstanceHandle, rules: StopRules) -> str | None:
        """Ask the instance to stop taking work (``quiet_signal`` or ``quiet_command``);
        returns why that failed, or None."""

    def alive(self, handle: InstanceHandle) -> bool:
        """The very process in ``handle`` is still running (pid and start marker match)."""

    def exit_reason(self, handle: InstanceHandle) -> str | None:
        """Why a dead instance ended ("exited with code 3", "killed by SIGKILL") if known."""
