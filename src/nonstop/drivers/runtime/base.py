"""The runtime port: start, watch and stop instances of a release.

Local processes are the default adapter (drivers/runtime/local.py); ssh hosts and Kubernetes
implement the same port later. Handles are plain data persisted in the store, so a restarted
agent re-adopts instances it did not start itself (checking pid *and* start time, so a recycled
pid is never mistaken for ours).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


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
        )


class Runtime(Protocol):
    async def start(self, spec: InstanceSpec) -> InstanceHandle:
        """Start one instance. Raises RuntimeDriverError with the reason (and the tail of its
        output) when it cannot be started at all."""

    async def stop(self, handle: InstanceHandle, signal: str, timeout: float) -> None:
        """Send ``signal``; after ``timeout`` kill the whole process group. Idempotent: an
        instance that is already gone is fine."""

    def alive(self, handle: InstanceHandle) -> bool:
        """The very process in ``handle`` is still running (pid and start marker match)."""

    def exit_reason(self, handle: InstanceHandle) -> str | None:
        """Why a dead instance ended ("exited with code 3", "killed by SIGKILL") if known."""
