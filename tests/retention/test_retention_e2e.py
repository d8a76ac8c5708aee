"""One end-to-end run against a real agent (real Caddy, real processes): bad deploy requests
change nothing, and `nonstop prune` with the agent running keeps exactly what it must."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from e2e.harness import AgentProcess, Project, free_port
from nonstop.errors import UsageError

pytestmark = pytest.mark.slow


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Project, AgentProcess]]:
    root = tmp_path / "shop"
    root.mkdir()
    app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
    (root / "app.py").write_text(app)
    project = Project(root, free_port())
    project.write_config(extra="\n[retention]\nreleases = 1\n")
    agent = AgentProcess(project)
    try:
        agent.start()
        yield project, agent
    finally:
        agent.cleanup()


def _wait(check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_bad_requests_change_nothing_and_prune_keeps_what_is_needed(
    running: tuple[Project, AgentProcess],
) -> None:
    project, agent = running
    releases = project.paths.state / "releases"
    for release, env, message in [
        ("v1", {"A=B": "1"}, 'deploy: env: "A=B": not a valid variable name'),
        ("v1", {"A": "x\x00y"}, 'deploy: env: "A": the value contains a NUL character'),
        ("v9\n", {}, 'release name "v9\\n" is not valid'),
    ]:
        with pytest.raises(UsageError) as caught:  # a 400 from the API
            agent.deploy(release, **env)
        assert message in str(caught.value)
    assert agent.status()["rollout"] is None
    assert not releases.exists() or not any(releases.iterdir())
    bad_env = project.cli("deploy", "v1", "--env", "BAD KEY=1")
    assert bad_env.returncode == 2
    assert '"BAD KEY": not a valid variable name' in bad_env.stderr

    for name in ("v1", "v2", "v3", "v4"):
        row = agent.deploy(name)
        assert agent.wait_rollout(row["id"])["status"] == "completed"
    # v1 and v2 stopped serving; v3 stays warm (keep_previous) as the rollback target
    _wait(lambda: {i["release"] for i in agent.status()["instances"]} <= {"v3", "v4"})

    # the agent prunes after each rollout: what it could not yet (still draining) goes now
    auto = {"v1", "v2"} - {p.name for p in releases.iterdir()}
    dry = json.loads(project.cli("prune", "--dry-run", "--json", check=True).stdout)
    assert set(dry["releases_removed"]) == {"v1", "v2"} - auto, (auto, dry)
    report = json.loads(project.cli("prune", "--json", check=True).stdout)
    assert report["releases_kept"]["v4"] == "the active release"
    assert report["releases_kept"]["v3"] == "the previous release (rollback target)"
    assert sorted(p.name for p in releases.iterdir() if not p.name.startswith(".")) == [
        "v3",
        "v4",
    ]
    logs = {p.name for p in project.paths.logs.iterdir()}
    assert not any(name.startswith(("v1-", "v2-")) for name in logs)
    state = agent.status()["state_dir"]  # status tells the size of what is left
    assert state["path"] == str(project.paths.state)
    assert state["bytes"] > 0
    shown = project.cli("status", check=True).stdout
    assert f"state: {project.paths.state} (" in shown
    # what was kept still works: an instant rollback to v3
    back = project.cli("rollback")
    assert back.returncode == 0, back.stdout + back.stderr
