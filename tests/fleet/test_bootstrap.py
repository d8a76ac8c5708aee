"""`nonstop fleet trust | bootstrap | status` on real test hosts, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.conftest import MakeFleet, fleet_toml
from fleet.netns import TestFleet, read_cmdline

pytestmark = pytest.mark.slow


def nonstop(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NONSTOP_PROJECT": str(project)}
    argv = [sys.executable, "-m", "nonstop.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)


def project_for(fleet: TestFleet) -> Path:
    project = fleet.workdir / "project"
    project.mkdir()
    (project / "nonstop.toml").write_text(fleet_toml(fleet))
    return project


@pytest.mark.timeout(600)  # the first user of the session's wheelhouse waits for its build too
def test_bootstrap_installs_over_ssh_and_status_reports_each_host(
    make_fleet: MakeFleet, wheelhouse: Path
) -> None:
    fleet = make_fleet(2)
    project = project_for(fleet)
    refused = nonstop(project, "fleet", "bootstrap", "--wheels", str(wheelhouse))
    assert refused.returncode == 1
    assert "host1" in refused.stdout
    assert "is not known" in refused.stdout
    trusted = nonstop(project, "fleet", "trust", "host1")
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert "host1: SHA256:" in trusted.stdout
    assert "recorded in" in trusted.stdout
    done = nonstop(project, "fleet", "bootstrap", "--trust-new", "--wheels", str(wheelhouse))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "host2: nonstop 0.1.0 installed" in done.stdout
    assert "agent started (detached: no systemd on the host" in done.stdout  # the netns hosts
    status = nonstop(project, "fleet", "status", "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["rollout"] is None
    rows = {row["host"]: row for row in document["hosts"]}
    for host in fleet.hosts:
        row = rows[host.name]
        assert (row["state"], row["version"], row["release"]) == ("ready", "0.1.0", None), row
        assert row["router"] == f"haproxy {host.address}:8080"
        agents = [p for p in host.pids() if "nonstop.agent" in read_cmdline(p)]
        assert len(agents) == 1, "the agent runs inside the host's namespace"
    again = nonstop(project, "fleet", "bootstrap", "host1", "--wheels", str(wheelhouse))
    assert "host1: nonstop 0.1.0 installed (0 wheels copied); agent already running" in again.stdout
    fleet.hosts[1].cut()
    cut = nonstop(project, "fleet", "status")
    assert "host1 (" in cut.stdout
    assert ": ready nonstop 0.1.0" in cut.stdout
    assert "host2 (" in cut.stdout
    assert "unreachable - cannot connect to host2" in cut.stdout


def test_fleet_commands_without_a_fleet_table_or_with_an_unknown_host(
    make_fleet: MakeFleet, tmp_path: Path
) -> None:
    (tmp_path / "nonstop.toml").write_text('[app]\nname = "a"\ncommand = "a {port}"\n')
    bare = nonstop(tmp_path, "fleet", "status")
    assert bare.returncode == 2
    assert "has no [fleet] table" in bare.stderr
    fleet = make_fleet(1)
    project = project_for(fleet)
    unknown = nonstop(project, "fleet", "trust", "web9")
    assert unknown.returncode == 2
    assert 'no host "web9" in [fleet] (hosts: host1)' in unknown.stderr
