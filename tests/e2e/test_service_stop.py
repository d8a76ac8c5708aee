"""What the systemd unit does to a running project: its ExecStop (`nonstop down --keep`) and
then SIGTERM to the agent alone (KillMode=process) stop the agent and nothing else; the agent
systemd starts again adopts the same instances. Under load, no request fails."""

from __future__ import annotations

import json
import os
import signal

import pytest

from e2e.harness import AgentProcess, Project
from e2e.test_bluegreen import assert_zero_failures, first_deploy, load, settle
from nonstop.host.unit import UnitSpec, render

pytestmark = pytest.mark.slow


def exec_stop(project: Project) -> list[str]:
    """The unit's ExecStop line, as the command systemd would run."""
    spec = UnitSpec("shop", project.root, "PYTHON", user_unit=True)
    [line] = [x for x in render(spec).splitlines() if x.startswith("ExecStop=")]
    return line.removeprefix("ExecStop=").split()[1:]  # after the interpreter


def serving(agent: AgentProcess) -> dict[str, int]:
    return {i["id"]: i["pid"] for i in agent.status()["instances"] if i["state"] == "ready"}


def test_stopping_the_service_leaves_instances_serving_and_a_restart_adopts_them(
    project: Project, agent: AgentProcess
) -> None:
    agent.start()
    first_deploy(agent)
    before = serving(agent)
    assert len(before) == 2
    with load(project) as bg:
        settle()
        stop = exec_stop(project)
        assert stop == ["-m", "nonstop.cli", "down", "--keep"]
        project.cli(*stop[2:], check=True)  # ExecStop
        assert agent.wait_exit() == 0
        for pid in before.values():
            os.kill(pid, 0)  # still alive
        agent.start()
        assert serving(agent) == before  # adopted: same instances, same pids
        assert agent.process is not None
        agent.process.send_signal(signal.SIGTERM)  # KillMode=process: the agent alone
        assert agent.wait_exit() == 0
        agent.start()
        assert serving(agent) == before
        settle()
    assert_zero_failures(bg, caddy_reload_race=True)


def test_doctor_knows_the_running_agent_holds_its_port(
    project: Project, agent: AgentProcess
) -> None:
    agent.start()
    done = project.cli("doctor", "--json")
    findings = {f["check"]: f for f in json.loads(done.stdout)["findings"]}
    assert findings["port router.listen"] == {
        "check": "port router.listen",
        "status": "ok",
        "message": f"127.0.0.1:{project.port} is held by this project's agent",
        "fix": "",
    }
    assert agent.process is not None
    whose = f"the running agent (pid {agent.process.pid})"
    assert findings["open files"]["message"].startswith(whose)
