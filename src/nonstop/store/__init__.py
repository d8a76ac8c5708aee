"""Durable state under .nonstop/: releases, instances, rollouts, journal, events."""

from __future__ import annotations

from pathlib import Path

from nonstop.store.sqlite import InstanceRow, ReleaseRow, RolloutInProgress, RolloutRow, Store

STATE_DB = "state.db"

__all__ = [
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
        value = store.get("active_release")
        return str(value) if value else None
    finally:
        store.close()


def live_instances(state_dir: Path) -> list[tuple[str, str]]:
    """``(release, instance_id)`` of every recorded instance whose very process is alive.

    Reads the store and checks each process directly (pid and start marker), so the answer is
    right even while the agent itself is down: instances outlive the agent."""
    from nonstop.drivers.runtime.base import InstanceHandle
    from nonstop.drivers.runtime.local import LocalRuntime

    if not (state_dir / STATE_DB).exists():
        return []
    store = open_store(state_dir)
    try:
        rows = store.instances()
    finally:
        store.close()
    runtime = LocalRuntime()
    return [
        (row.release, row.id) for row in rows if runtime.alive(InstanceHandle.from_dict(row.handle))
    ]
