"""A state dir an older agent wrote (handles with pid and start marker in the open, desired
state under separate keys) is upgraded when the store opens, and its running instance is
adopted through the opaque handle."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from runtime_helpers import sample_spec, wait_until

from nonstop.drivers.runtime.base import InstanceHandle, InstanceStatus
from nonstop.drivers.runtime.local import LocalRuntime
from nonstop.drivers.runtime.localref import LocalRef
from nonstop.store import DesiredState, open_store


def _old_state_dir(state: Path, handle: dict[str, object]) -> None:
    """Write what an agent from before the runtime port left: its schema and rows."""
    open_store(state).close()  # the tables
    db = sqlite3.connect(state / "state.db")
    with db:
        db.execute(
            "INSERT INTO instances (id, release, handle, state, updated_at) "
            "VALUES ('v1-1', 'v1', ?, 'ready', 0)",
            (json.dumps(handle),),
        )
        old = {
            "active_release": "v1",
            "previous_release": "v0",
            "desired": {"v1": 2, "v0": 1},
            "weights": {"v1": 100},
            "retire": {"v0": 1234.5},
        }
        for key, value in old.items():
            db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value)))
    db.close()


async def test_an_upgraded_store_adopts_an_older_agents_instance(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    started = await runtime.start(sample_spec(tmp_path))
    await wait_until(lambda: any("listening on" in line for line in runtime.read_log(started)))
    ref = LocalRef.of(started)
    old_handle = {
        "instance_id": "v1-1",
        "release": "v1",
        "pid": ref.pid,
        "port": started.port,
        "host": started.host,
        "start_marker": ref.start_marker,
        "started_at": started.started_at,
        "tag": ref.tag,
    }
    state = tmp_path / ".nonstop"
    state.mkdir()
    _old_state_dir(state, old_handle)

    store = open_store(state)
    try:
        (row,) = store.instances()
        assert store.desired_state() == DesiredState(
            active_release="v1",
            previous_release="v0",
            replicas={"v1": 2, "v0": 1},
            weights={"v1": 100},
            retire={"v0": 1234.5},
        )
        assert store.get("desired") is None  # folded into the one record
    finally:
        store.close()
    handle = InstanceHandle.from_dict(row.handle)
    assert "pid" not in row.handle
    assert (handle.address, handle.runtime) == (started.address, "local")
    assert LocalRef.of(handle) == ref

    adopter = LocalRuntime()  # a new agent: not the parent of the process
    assert await adopter.adopt(handle) == InstanceStatus("running")
    await adopter.stop(handle, "SIGTERM", 5.0)
    assert await adopter.status(handle) == InstanceStatus("exited", "exited")


def test_a_state_dir_opened_twice_keeps_its_desired_state(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.save_desired_state(DesiredState(active_release="v3", replicas={"v3": 2}))
    store.close()
    again = open_store(tmp_path)
    try:
        assert again.desired_state() == DesiredState(active_release="v3", replicas={"v3": 2})
    finally:
        again.close()
