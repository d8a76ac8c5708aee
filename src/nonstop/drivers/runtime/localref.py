"""The local runtime's reference to one instance: which exact process it is.

It travels inside :attr:`InstanceHandle.reference` as JSON, so the engine and the store keep
it without reading it. ``(pid, start_marker)`` names one process across agent restarts (the
start time in /proc never changes for the life of a process, and the kernel never gives two
processes of one pid the same start time); ``tag`` is the value of ``NONSTOP_RUN`` in every
process of this run, which finds children that left the process group.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nonstop.drivers.runtime.base import InstanceHandle
from nonstop.errors import RuntimeDriverError


@dataclass(frozen=True, slots=True)
class LocalRef:
    instance_id: str
    pid: int
    start_marker: str = ""
    tag: str = ""

    def dumps(self) -> str:
        return json.dumps({"pid": self.pid, "start_marker": self.start_marker, "tag": self.tag})

    @classmethod
    def of(cls, handle: InstanceHandle) -> LocalRef:
        """The reference inside a local instance's handle; RuntimeDriverError when the handle
        is not one the local runtime wrote."""
        try:
            data = json.loads(handle.reference)
            return cls(
                handle.instance_id,
                int(data["pid"]),
                str(data.get("start_marker", "")),
                str(data.get("tag", "")),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise RuntimeDriverError(
                f"instance {handle.instance_id}: its handle holds no local process reference "
                f"(runtime {handle.runtime!r}, reference {handle.reference[:80]!r})"
            ) from exc


def upgrade_handle(data: dict[str, object]) -> dict[str, object] | None:
    """A handle row written before handles became opaque (pid, start marker and tag at the
    top level, as every handle was then local) in today's shape; None when ``data`` needs no
    change. An upgraded agent adopts the instances of an older one through this."""
    if "reference" in data or "pid" not in data:
        return None
    ref = LocalRef(
        str(data.get("instance_id", "")),
        int(str(data["pid"])),
        str(data.get("start_marker", "")),
        str(data.get("tag", "")),
    )
    kept = {k: v for k, v in data.items() if k not in ("pid", "start_marker", "tag")}
    return {**kept, "reference": ref.dumps() if ref.pid else "", "runtime": "local"}
