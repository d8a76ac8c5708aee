"""The CLI as a user runs it: exit codes, messages, --json, and no traceback on bad input."""

from __future__ import annotations

import json
import socket
import time
from importlib import resources
from pathlib import Path

import pytest

from e2e.harness import AgentProcess, Project, free_port

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
    # The reason and its log tail are printed once, on one line (a pipe is never hard-wrapped).
    assert result.stdout.count("last probe: status 503") == 1, result.stdout
    [line] = [x for x in result.stdout.splitlines() if "not ready after" in x]
    assert "| last output: " in line


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


def test_router_port_taken_at_start_degrades_then_heals(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router that cannot start does not kill the agent: `up` says what failed (this start's
    errors only) and exits 1; the agent keeps retrying and heals once the port is free."""
    project.paths.ensure()
    project.paths.agent_log.write_text("error: an old failure from an earlier run\n")
    monkeypatch.setenv("NONSTOP_ROUTER_WAIT", "2")
    agent = AgentProcess(project)
    try:
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", project.port))
            blocker.listen()
            result = project.cli("up", "--detach", "--wait", "60")
        assert result.returncode == 1
        assert "degraded" in result.stderr
        assert str(project.port) in result.stderr
        assert "an old failure" not in result.stderr
        assert "Traceback" not in result.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = agent.status()
            if not status["degraded"] and status["router"]["alive"]:
                break
            time.sleep(0.2)
        assert not status["degraded"], status["degraded"]
        assert status["router"]["alive"]
    finally:
        agent.cleanup()


JSON_ARGS: dict[str, tuple[str, ...] | str] = {
    "status": ("status",),
    "history": ("history",),
    "events": ("events",),
    "logs": ("logs",),
    "analysis explain": ("analysis", "explain"),
    "flags list": ("flags", "list"),
    "flags token list": ("flags", "token", "list"),
    "deploy": ("deploy", "v2", "--env", "VERSION=v2"),
    "rollback": ("rollback",),
    "abort": ("abort",),
    "pause": ("pause",),
    "resume": ("resume",),
    "promote": ("promote",),
    "prune": ("prune", "--dry-run"),
    "service install": ("service", "install", "--user", "--dry-run"),
    "doctor": "exits 1 on any host problem: tests/host",
    "notify test": "needs webhook receivers: tests/notify",
    "flags show": "needs a flag: tests/flags",
    "verify": "runs load through a deploy: tests/e2e verify tests",
    "dashboard": "needs [dashboard] listen: tests/dashboard",
    "fleet status": "needs test hosts: tests/fleet/test_bootstrap.py",
    **{
        f"migrate {n}": "needs PostgreSQL: tests/migrate"
        for n in ("complete", "lint", "plan", "rollback", "start", "status")
    },
}


def json_commands() -> set[str]:
    import click

    from nonstop.cli.main import cli

    found: set[str] = set()

    def walk(command: click.Command, path: list[str], ctx: click.Context) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    walk(sub, [*path, name], click.Context(sub, parent=ctx))
        elif any("--json" in getattr(p, "opts", ()) for p in command.params):
            found.add(" ".join(path))

    walk(cli, [], click.Context(cli))
    return found


def test_long_path_every_json_output_parses_and_down_twice(tmp_path: Path) -> None:
    """A project path too long for a unix socket; every --json output is JSON (events: one
    document per line); a router setting change is refused at deploy; `down` twice is fine."""
    root = tmp_path / ("p" * 100) / "shop"
    root.mkdir(parents=True)
    app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
    (root / "app.py").write_text(app)
    project = Project(root, free_port())
    project.write_config()
    assert set(JSON_ARGS) >= json_commands(), json_commands() - set(JSON_ARGS)
    agent = AgentProcess(project)
    try:
        up = project.cli("up", "--detach")
        assert up.returncode == 0, up.stdout + up.stderr
        assert project.paths.socket.exists()
        assert not (project.paths.state / "agent.sock").exists()
        assert project.cli("deploy", "v1", "--env", "VERSION=v1").returncode == 0

        for name, args in JSON_ARGS.items():
            if isinstance(args, str):
                continue
            result = project.cli(*args, "--json")
            assert "Traceback" not in result.stderr, (name, result.stderr)
            if name in ("abort", "pause", "resume", "promote"):  # nothing in progress: exit 1
                assert result.returncode == 1, (name, result.stdout)
                assert result.stdout == ""
                continue
            assert result.returncode == 0, (name, result.stdout + result.stderr)
            if name == "events":
                events = [json.loads(line) for line in result.stdout.splitlines()]
                assert events
                assert all(isinstance(e["id"], int) for e in events)
            else:
                json.loads(result.stdout)

        config = project.paths.config.read_text()
        moved = free_port()
        project.paths.config.write_text(config.replace(str(project.port), str(moved)))
        refused = project.cli("deploy", "v3")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert (
            f"router.listen changed from 127.0.0.1:{project.port} to 127.0.0.1:{moved}"
            in refused.stderr
        )
        assert "nonstop down && nonstop up" in refused.stderr
        project.paths.config.write_text(config)

        down = project.cli("down")
        assert down.returncode == 0, down.stderr
        again = project.cli("down")
        assert again.returncode == 0, again.stderr
        assert "nothing to stop" in again.stdout
        assert "Error" not in again.stdout + again.stderr
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", project.port)) != 0  # the router is gone
    finally:
        agent.cleanup()


def test_a_start_that_cannot_bind_its_api_spawns_nothing(project: Project) -> None:
    """`[agent] listen` on a taken port: `up` fails with the reason, and no router keeps the
    router port (the API binds before anything is spawned)."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        project.write_config(extra=f'\n[agent]\nlisten = "127.0.0.1:{taken}"\n')
        result = project.cli("up", "--detach", "--wait", "30")
    AgentProcess(project).cleanup()
    assert result.returncode == 1, result.stdout
    assert f"cannot listen on {project.paths.socket} or 127.0.0.1:{taken}" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", project.port)) != 0
    assert not project.paths.socket.exists()
