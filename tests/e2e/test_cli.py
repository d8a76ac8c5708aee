"""The CLI as a user runs it: exit codes, messages, --json, and no traceback on bad input."""

from __future__ import annotations

import json
import socket

import pytest

from e2e.harness import AgentProcess, Project

pytestmark = pytest.mark.slow


def test_deploy_status_history_rollback_through_the_cli(project: Project) -> None:
    agent = AgentProcess(project)
    try:
        up = project.cli("up", "--detach")
        assert up.returncode == 0, up.stderr
        assert "agent running" in up.stdout
        again = project.cli("up", "--detach")
        assert "already running" in again.stdout

        first = project.cli("deploy", "v1", "--env", "VERSION=v1")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "v1 deployed" in first.stdout

        status = json.loads(project.cli("status", "--json", check=True).stdout)
        assert isinstance(status["agent"]["pid"], int)
        assert status["active_release"] == "v1"
        assert len(status["instances"]) == 2
        assert status["rollout"] is None

        second = project.cli("deploy", "v2", "--env", "VERSION=v2")
        assert second.returncode == 0, second.stdout + second.stderr

        back = project.cli("rollback")
        assert back.returncode == 0, back.stdout + back.stderr
        assert "rolled back to v1" in back.stdout

        history = json.loads(project.cli("history", "--json", check=True).stdout)
        assert [(r["candidate"], r["status"], r["rollback"]) for r in history] == [
            ("v1", "completed", True),
            ("v2", "completed", False),
            ("v1", "completed", False),
        ]
        events = project.cli("events", check=True).stdout
        assert "switched all traffic to v2" in events
        logs = project.cli("logs", "--release", "v1", check=True)
        assert "== v1-" in logs.stdout

        down = project.cli("down")
        assert down.returncode == 0, down.stderr
        gone = project.cli("status")
        assert gone.returncode == 1
        assert "no agent is running" in gone.stderr or "cannot reach the agent" in gone.stderr
    finally:
        agent.cleanup()


def test_a_release_that_never_gets_ready_exits_1_with_the_reason(
    project: Project, agent: AgentProcess
) -> None:
    project.write_config(start_period="1s")
    agent.start()
    assert project.cli("deploy", "v1").returncode == 0
    result = project.cli("deploy", "v2", "--env", "FAIL_HEALTH=1")
    assert result.returncode == 1
    assert "v2 aborted" in result.stdout
    assert "not ready after" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("deploy", "v 2"), 'release name "v 2" is not valid'),
        (("deploy", "v2", "--env", "NOEQUALS"), '--env: expected K=V, got "NOEQUALS"'),
        (("deploy", "v2", "--strategy", "yolo"), "Invalid value for '--strategy'"),
        (("promote",), "no rollout is in progress: nothing to promote"),
    ],
)
def test_bad_input_is_a_clear_message_and_exit_2_or_1(
    project: Project, agent: AgentProcess, args: tuple[str, ...], message: str
) -> None:
    agent.start()
    result = project.cli(*args)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.returncode == (1 if args[0] == "promote" else 2)


def test_invalid_config_is_exit_2_before_anything_starts(project: Project) -> None:
    (project.root / "nonstop.toml").write_text(
        '[app]\nname = "shop"\ncommand = "x {port}"\n[strategy]\nkind = "bleugreen"\n'
    )
    for command in (("up", "--detach"), ("deploy", "v1")):
        result = project.cli(*command)
        assert result.returncode == 2
        assert 'strategy.kind: expected one of bluegreen, rolling, canary, got "bleugreen"' in (
            result.stderr
        )
        assert "Traceback" not in result.stderr
    assert not project.paths.socket.exists()


def test_no_agent_is_a_clear_message(project: Project) -> None:
    result = project.cli("status")
    assert result.returncode == 1
    assert "nonstop up" in result.stderr


def test_router_port_already_taken_is_reported(project: Project) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", project.port))
        blocker.listen()
        result = project.cli("up", "--detach", "--wait", "20")
    agent = AgentProcess(project)
    agent.cleanup()
    assert result.returncode == 1
    assert "did not come up" in result.stderr
    assert str(project.port) in result.stderr
