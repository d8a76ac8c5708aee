"""Durable state under .nonstop/: releases, instances, rollouts, journal, events."""

from __future__ import annotations

from pathlib import Path

from nonstop.store.desired import DesiredState
from nonstop.store.sqlite import InstanceRow, ReleaseRow, RolloutInProgress, RolloutRow, Store

STATE_DB = "state.db"

__all__ = [
    "DesiredState",
    "InstanceRow",
    "ReleaseRow",
    "RolloutInProgress",
    "RolloutRow",
    "Store",
    "active_release",
    "live_instances",
    "open_store",
]


def open_store(state_dir: Path) -> Store:
    return Store(state_dir / STATE_DB)


def active_release(state_dir: Path) -> str | None:
    """The release that serves all traffic when no rollout runs (None before the first deploy)."""
    if not (state_dir / STATE_DB).exists():
        return None
    store = open_store(state_dir)
    try:
        return store.desired_state().active_release
    finally:
        store.close()


def live_instances(state_dir: Path) -> list[tuple[str, str]]:
    """``(release, instance_id)`` of every recorded instance whose very process is alive.

    Reads the store and asks each instance's runtime (by the kind its handle records) directly,
    so the answer is right even while the agent itself is down: instances outlive the agent.
    Synchronous, for the migration gate; it runs outside any event loop (a thread of the
    agent's, or the CLI)."""
    import asyncio

    from nonstop.drivers.runtime.base import InstanceHandle
    from nonstop.drivers.runtime.registry import RuntimeContext, make_runtime

    if not (state_dir / STATE_DB).exists():
        return []
    store = open_store(state_dir)
    try:
        rows = [row for row in store.instances() if row.handle.get("reference")]
    finally:
        store.close()

    async def alive() -> list[tuple[str, str]]:
        found = []
        for row in rows:
            handle = InstanceHandle.from_dict(row.handle)
            runtime = make_runtime(handle.runtime, RuntimeContext(state_dir))
            if (await runtime.adopt(handle)).running:
                found.append((row.release, row.id))
        return found

    return asyncio.run(alive())
