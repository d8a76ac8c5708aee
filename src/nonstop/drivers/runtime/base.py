"""The runtime port: start, watch and stop instances of a release.

Local processes are the default adapter (drivers/runtime/local.py); ssh hosts and containers
implement the same port later and register a kind (drivers/runtime/registry.py). Handles are
plain data persisted in the store: an address and an opaque reference only the runtime reads,
so a restarted agent re-adopts instances it did not start itself (locally checking pid *and*
start time, so a recycled pid is never mistaken for ours). The engine never sees a pid.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from nonstop.config.schema import HealthConfig
    from nonstop.drivers.runtime.health import ProbeResult
    from nonstop.drivers.runtime.supervise import SupervisorEvent

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
    """What the engine knows of a running instance: where it answers, and a reference only the
    runtime that started it reads.

    ``reference`` is the runtime's own serialised identity of the instance (locally the pid,
    the process start time and the run tag; a container runtime would keep a container id).
    The store persists it as opaque text and a restarted agent hands it back to
    :meth:`Runtime.adopt`; nothing outside the runtime parses it."""

    instance_id: str
    release: str
    host: str
    port: int
    reference: str = ""
    started_at: float = 0.0
    runtime: str = "local"
    """The registry kind of the runtime that started it (drivers/runtime/registry.py)."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "release": self.release,
            "host": self.host,
            "port": self.port,
            "reference": self.reference,
            "started_at": self.started_at,
            "runtime": self.runtime,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceHandle:
        return cls(
            instance_id=str(data["instance_id"]),
            release=str(data["release"]),
            host=str(data.get("host", "127.0.0.1")),
            port=int(data["port"]),
            reference=str(data.get("reference", "")),
            started_at=float(data.get("started_at", 0.0)),
            runtime=str(data.get("runtime", "local")),
        )


Phase = Literal["running", "exited", "unknown"]


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """What a runtime says of an instance right now.

    "running": the very instance of the handle runs; "exited": it ended (``reason`` says how
    when known: "exited with code 3", "killed by SIGKILL"), or the handle names something that
    is not ours any more; "unknown": the runtime could not tell (a remote host that does not
    answer). The engine treats "unknown" as neither dead nor routable-by-default: it keeps the
    instance and asks again."""

    phase: Phase
    reason: str = ""

    @property
    def running(self) -> bool:
        return self.phase == "running"

    @property
    def exited(self) -> bool:
        return self.phase == "exited"


RUNNING = InstanceStatus("running")


ReadinessCheck = Callable[[InstanceHandle, float], Awaitable["ProbeResult"]]
"""A role's readiness check (drivers/runtime/probes.py)."""


class Supervision(Protocol):
    """Keeps a runtime's instances running (restarts with backoff, readiness regained and
    lost); what it sees reaches the engine as SupervisorEvents, with the new handle on a
    restart. The local runtime's is drivers/runtime/supervise.py."""

    def add(
        self,
        spec: InstanceSpec,
        handle: InstanceHandle,
        *,
        ready: bool = False,
        check: ReadinessCheck | None = None,
    ) -> None:
        """Watch ``handle``; ``ready`` when its readiness check already passed; ``check`` is
        the role's readiness probe (None: HTTP on ``health.path``)."""

    async def remove(self, instance_id: str) -> None:
        """Stop watching it (it keeps running: stopping is the engine's call)."""

    async def close(self) -> None:
        """Stop watching everything (instances keep running for the next agent)."""


class Runtime(Protocol):
    """The port every runtime kind implements (docs/decisions/0500-runtime-port.md).

    Every method is async, so a runtime that asks a remote host or a container engine fits
    without blocking the agent's loop."""

    kind: str

    async def start(self, spec: InstanceSpec) -> InstanceHandle:
        """Start one instance. Raises RuntimeDriverError with the reason (and the tail of its
        output) when it cannot be started at all."""

    async def status(self, handle: InstanceHandle) -> InstanceStatus:
        """Running, exited (with why), or unknown, for the very instance of ``handle``."""

    async def adopt(self, handle: InstanceHandle) -> InstanceStatus:
        """Re-attach to an instance a previous agent started (its handle came from the store).
        Checks identity: a handle whose instance is gone, or whose reference now names
        something else (a recycled pid), is "exited" and is never signalled."""

    async def stop(
        self, handle: InstanceHandle, signal: str, timeout: float, *, kill_mode: KillMode = "main"
    ) -> StopReport:
        """Send ``signal`` (to the main process, or the group with ``kill_mode="group"``);
        at ``timeout`` kill every process of the instance, escaped children included.
        Idempotent: an instance that is already gone is fine."""

    async def quiet(self, handle: InstanceHandle, rules: StopRules) -> str | None:
        """Ask the instance to stop taking work (``quiet_signal`` or ``quiet_command``);
        returns why that failed, or None."""

    async def sweep_strays(self, known: Sequence[InstanceHandle]) -> list[str]:
        """Stop whatever this runtime started for this state dir that none of ``known``
        accounts for (an instance started just before an agent crashed, before its handle was
        written); returns one sentence per process stopped."""

    async def log_tail(self, handle: InstanceHandle, n: int = 20) -> list[str]:
        """The last ``n`` lines the instance wrote, oldest first ([] when unknown)."""

    def facts(self, handle: InstanceHandle) -> Mapping[str, str | int]:
        """What people may want to see of the instance in status ({"pid": 1234} locally)."""

    def supervise(
        self, health: HealthConfig, on_event: Callable[[SupervisorEvent], None]
    ) -> Supervision:
        """The supervision of this runtime's instances under ``health`` (restart, backoff,
        readiness), reporting through ``on_event``: a runtime whose platform restarts
        instances itself (containers) reports those restarts here instead."""


def describe_facts(facts: Mapping[str, str | int]) -> str:
    """``{"pid": 12}`` -> "pid 12", for event messages."""
    return ", ".join(f"{key} {value}" for key, value in facts.items())
