"""Blue-green deploys end to end: a real agent, a real router, real app processes, real load.

"Zero downtime" is measured here: every request the load generator schedules during a deploy
or a rollback must succeed. Every test runs once per router kind (harness.ROUTER_KINDS)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from e2e.harness import ROUTER_KINDS, AgentProcess, Project
from nonstop.errors import StateError
from nonstop.loadgen.generator import LoadGenerator
from nonstop.loadgen.report import LoadReport

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("router_kind", ROUTER_KINDS)]


class BackgroundLoad:
    """A LoadGenerator on its own event loop thread, so a test can deploy meanwhile."""

    def __init__(self, url: str, rps: float) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.gen = LoadGenerator(url, rps, timeout=5.0, group_by_header="X-Release")
        self.report: LoadReport | None = None

    def __enter__(self) -> BackgroundLoad:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.gen.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.report = asyncio.run_coroutine_threadsafe(self.gen.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def load(project: Project, rps: float = 150) -> Iterator[BackgroundLoad]:
    with BackgroundLoad(project.url, rps) as bg:
        yield bg


def settle(seconds: float = 0.7) -> None:
    import time

    time.sleep(seconds)


def wait_phase(agent: AgentProcess, phase: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rollout = agent.status()["rollout"]
        if rollout and rollout["phase"] == phase:
            return
        time.sleep(0.1)
    raise AssertionError(f"rollout never reached phase {phase}: {agent.status()['rollout']}")


def first_deploy(agent: AgentProcess) -> dict[str, Any]:
    row = agent.deploy("v1")
    done = agent.wait_rollout(row["id"])
    assert done["status"] == "completed", done
    return done


def assert_zero_failures(
    bg: BackgroundLoad, at_least: int = 100, *, caddy_reload_race: bool = False
) -> LoadReport:
    """No request failed. With ``caddy_reload_race``, one kind of failure is tolerated, rarely
    (at most 1 in 200 requests): a connection a Caddy reload closed with no response byte, on
    the resend too (Caddy's known reload race, docs/router.md "Reloads"; HAProxy has none and
    is held to zero). Every 5xx, timeout or other transport error still fails the test."""
    report = bg.report
    assert report is not None
    assert report.scheduled >= at_least
    if caddy_reload_race and report.failed:
        only_closed = set(report.errors) <= {"ServerDisconnectedError"}
        rare = report.failed * 200 <= report.scheduled
        if only_closed and rare and report.failed == report.counts.get("transport", 0):
            print(f"Caddy reload race: {report.failed} closed with no response; {report.retried}")
            return report
    assert report.failed == 0, (
        report.counts,
        report.status_codes,
        report.errors,
        report.retried,
        report.timeline,
    )
    if report.retried:
        # Sent twice because the first attempt got no response byte (a Caddy reload closing
        # the connection it was written on; docs/router.md): not a failure, but shown.
        print(f"retried requests: {report.retried}")
    return report


def test_first_deploy_then_bluegreen_under_load(project: Project, agent: AgentProcess) -> None:
    agent.start()
    router = agent.status()["router"]
    assert (router["kind"], router["alive"]) == (project.router, True)
    first_deploy(agent)
    status = agent.status()
    assert status["active_release"] == "v1"
    assert sorted(i["state"] for i in status["instances"]) == ["ready", "ready"]

    with load(project) as bg:
        settle()
        done = agent.wait_rollout(agent.deploy("v2")["id"])
        settle()
    report = assert_zero_failures(bg)
    assert done["status"] == "completed", done
    assert set(report.groups) == {"v1", "v2"}, report.groups  # both sides served, none failed

    status = agent.status()
    assert status["active_release"] == "v2"
    assert status["previous_release"] == "v1"
    assert status["weights"] == {"v2": 100}
    warm = [i for i in status["instances"] if i["release"] == "v1" and i["state"] == "ready"]
    assert len(warm) == 2, "the previous side stays warm for an instant rollback"


def test_rollback_while_warm_is_instant_and_loses_nothing(
    project: Project, agent: AgentProcess
) -> None:
    agent.start()
    first_deploy(agent)
    assert agent.wait_rollout(agent.deploy("v2")["id"])["status"] == "completed"
    pids_before = {i["id"]: i["pid"] for i in agent.status()["instances"]}

    with load(project) as bg:
        settle()
        row = agent.call("POST", "/v1/rollback")
        done = agent.wait_rollout(row["id"])
        settle()
    assert_zero_failures(bg)
    assert done["status"] == "completed", done
    assert done["rollback"]
    status = agent.status()
    assert status["active_release"] == "v1"
    v1 = {i["id"]: i["pid"] for i in status["instances"] if i["release"] == "v1"}
    assert v1
    assert all(pids_before[i] == pid for i, pid in v1.items()), "nothing was restarted"


def _expect_aborted(agent: AgentProcess, row: dict[str, Any], reason_part: str) -> None:
    done = agent.wait_rollout(row["id"])
    assert done["status"] == "aborted", done
    assert reason_part in done["reason"], done["reason"]
    status = agent.status()
    assert status["active_release"] == "v1"
    assert status["weights"] == {"v1": 100}


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"FAIL_HEALTH": "1"}, "not ready after"),
        ({"CRASH_AFTER": "0"}, "exited"),
    ],
    ids=["never-ready", "exits-at-once"],
)
def test_bad_release_aborts_and_old_side_keeps_serving(
    project: Project, agent: AgentProcess, env: dict[str, str], reason: str
) -> None:
    project.write_config(start_period="2s")
    agent.start()
    first_deploy(agent)
    with load(project, rps=100) as bg:
        settle()
        _expect_aborted(agent, agent.deploy("v2", **env), reason)
        settle()
    assert_zero_failures(bg, at_least=100)
    assert set(bg.report.groups) == {"v1"}  # type: ignore[union-attr]


def test_failing_smoke_test_aborts_before_any_traffic_moves(
    project: Project, agent: AgentProcess
) -> None:
    agent.start()
    first_deploy(agent)
    project.write_config(bluegreen='smoke = "exit 3"')
    _expect_aborted(agent, agent.deploy("v2"), "smoke test failed (exit code 3)")


def test_smoke_test_sees_the_new_side_directly(project: Project, agent: AgentProcess) -> None:
    agent.start()
    first_deploy(agent)
    (project.root / "smoke.py").write_text(
        "import os, sys, urllib.request\n"
        "body = urllib.request.urlopen(os.environ['NONSTOP_TARGET_URL'] + '/').read()\n"
        "sys.exit(0 if body.startswith(b'version=v2') else 1)\n"
    )
    project.write_config(bluegreen=f'smoke = "{sys.executable} smoke.py"')
    done = agent.wait_rollout(agent.deploy("v2")["id"])
    assert done["status"] == "completed", done


def test_second_deploy_while_one_runs_is_refused(project: Project, agent: AgentProcess) -> None:
    project.write_config(watch="30s")
    agent.start()
    first_deploy(agent)
    row = agent.deploy("v2")
    with pytest.raises(StateError, match=r"rollout \d+ \(v2\) is in progress"):
        agent.deploy("v3")
    wait_phase(agent, "watching")
    agent.call("POST", "/v1/command", {"command": "abort"})
    done = agent.wait_rollout(row["id"])
    assert done["status"] == "rolled_back"
    assert "abort requested by operator" in done["reason"]


def test_errors_during_the_watch_switch_back_by_themselves(
    project: Project, agent: AgentProcess
) -> None:
    project.write_config(watch="20s")
    agent.start()
    first_deploy(agent)
    with load(project, rps=100) as bg:
        settle()
        done = agent.wait_rollout(agent.deploy("v2", ERROR_RATE="0.5")["id"])
        settle()
    assert done["status"] == "rolled_back", done
    assert "watch: error_rate" in done["reason"]
    assert agent.status()["weights"] == {"v1": 100}
    report = bg.report
    assert report is not None
    # Only the requests v2 answered with 500 during the watch failed; none were dropped.
    assert report.counts["transport"] == 0
    assert report.counts["timeout"] == 0


CRASH_POINTS = ["intent:scale", "done:scale", "intent:weights", "done:weights", "finish"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_agent_killed_at_each_transition_recovers_without_dropping_a_request(
    project: Project, agent: AgentProcess, point: str
) -> None:
    agent.start()
    first_deploy(agent)
    agent.kill9()
    with load(project) as bg:
        # The same agent binary, told to die abruptly right at `point` (as kill -9 would).
        agent.start({"NONSTOP_CRASH_AT": point})
        row = agent.deploy("v2")
        assert agent.wait_exit(60) == 137, agent.log_tail()
        settle(0.3)
        agent.start()  # `nonstop up` again
        done = agent.wait_rollout(row["id"])
        settle()
    assert done["status"] == "completed", done
    assert_zero_failures(bg)
    status = agent.status()
    assert status["active_release"] == "v2"
    assert status["weights"] == {"v2": 100}


def test_router_process_dying_is_restarted_and_traffic_resumes(
    project: Project, agent: AgentProcess
) -> None:
    import os
    import signal
    import time
    import urllib.request

    agent.start()
    first_deploy(agent)
    router_pid = agent.status()["router"].get("pid")
    assert router_pid, agent.status()["router"]
    os.kill(router_pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    body = ""
    while time.monotonic() < deadline:
        try:
            body = urllib.request.urlopen(project.url, timeout=2).read().decode()
            break
        except OSError:
            time.sleep(0.2)
    assert body.startswith("version=v1"), body
    # nginx's workers outlive a killed master and keep serving until the agent notices: the
    # restart is what is awaited, not the first answer.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and agent.status()["router"]["pid"] in (None, router_pid):
        time.sleep(0.2)
    assert agent.status()["router"]["pid"] not in (None, router_pid), agent.status()["router"]
    assert any("router" in e["message"] for e in agent.call("GET", "/v1/events"))
    assert urllib.request.urlopen(project.url, timeout=5).read().startswith(b"version=v1")


def test_crashed_instance_is_restarted_and_rejoins_without_failed_requests(
    project: Project, agent: AgentProcess
) -> None:
    import os
    import signal
    import time

    agent.start()
    first_deploy(agent)
    victim = agent.status()["instances"][0]
    with load(project, rps=100) as bg:
        settle()
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = {i["id"]: i for i in agent.status()["instances"]}[victim["id"]]
            if now["state"] == "ready" and now["pid"] != victim["pid"]:
                break
            time.sleep(0.2)
        settle()
    assert now["restarts"] == 1, now
    assert now["state"] == "ready", now
    # New connections to the dead upstream are retried on its peer; only a request that was
    # inside the process at the instant it was killed can fail (at 100 req/s and ~1 ms each,
    # rarely even one).
    report = bg.report
    assert report is not None
    assert report.failed <= 2, report.to_dict()
    messages = [e["message"] for e in agent.call("GET", "/v1/events")]
    restarting = [m for m in messages if m.startswith(f"instance {victim['id']} ")]
    assert any("SIGKILL; restarting in 1s" in m for m in restarting), messages
