"""The controller's journal: one running rollout, intended then done, commands in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.errors import StateError
from nonstop.fleet.plan import FleetState, FrontHosts, HostDeploy
from nonstop.fleet.run import previous_release
from nonstop.fleet.store import FleetStore


def test_a_decision_is_intended_until_done_and_survives_a_reopen(tmp_path: Path) -> None:
    store = FleetStore(tmp_path / "fleet.db")
    rollout = store.start({"candidate": "v2", "stable": "v1"}, FleetState("batch", 1.0))
    actions = (FrontHosts(("web2",)), HostDeploy("web1", "v2"))
    entry = store.decide(rollout.id, FleetState("batch", 2.0, batch=("web1",)), actions)
    store.close()
    reopened = FleetStore(tmp_path / "fleet.db")
    running = reopened.running()
    assert running is not None
    assert running.state == FleetState("batch", 2.0, batch=("web1",))
    assert reopened.intended(rollout.id) == [(entry, actions)]
    reopened.done(entry)
    assert reopened.intended(rollout.id) == []


def test_one_running_rollout_and_commands_taken_once(tmp_path: Path) -> None:
    store = FleetStore(tmp_path / "fleet.db")
    first = store.start({"candidate": "v2"}, FleetState("batch", 0))
    with pytest.raises(StateError, match=r"already running \(#1 to v2\): `nonstop fleet resume`"):
        store.start({"candidate": "v3"}, FleetState("batch", 0))
    store.command(first.id, "abort")
    store.command(first.id, "resume")
    assert [store.take_command(first.id) for _ in range(3)] == ["abort", "resume", None]
    with pytest.raises(StateError, match="no previous fleet release"):
        previous_release(store)
    store.finish(first.id, "completed", "every host serves v2")
    assert store.running() is None
    with pytest.raises(StateError, match="no previous fleet release"):
        previous_release(store)  # a first deploy has nothing before it
    store.start({"candidate": "v3", "stable": "v2"}, FleetState("batch", 0))
    store.finish(2, "completed", "every host serves v3")
    assert previous_release(store) == "v2"
