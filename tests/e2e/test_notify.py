"""A real agent (real Caddy, real instances) notifying a real webhook receiver through a first
deploy, a canary paused and promoted by hand, and a rollback: the notices arrive in order."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request

import pytest

from e2e.harness import AgentProcess, Project
from e2e.test_bluegreen import first_deploy
from notify.receiver import ThreadedReceiver

pytestmark = pytest.mark.slow

CANARY = """
[strategy.canary]
steps = [{ weight = 50, pause = {} }]
sequential = false

[[notify]]
url = "URL"
secret = "$NOTIFY_SECRET"
backoff = "50ms"
"""


def kinds(hook: ThreadedReceiver) -> list[str]:
    return [r.json["event"] for r in hook.received]


def test_a_deploy_a_paused_canary_and_a_rollback_are_told_in_order(
    project: Project, agent: AgentProcess
) -> None:
    with ThreadedReceiver() as hook:
        project.write_config(extra=CANARY.replace("URL", hook.url))
        agent.start(env={"NOTIFY_SECRET": "k"})
        first_deploy(agent)
        hook.until(lambda: kinds(hook) == ["rollout_started", "promoted"])

        text = (project.root / "nonstop.toml").read_text()
        (project.root / "nonstop.toml").write_text(text.replace('"bluegreen"', '"canary"', 1))
        rollout = agent.deploy("v2")["id"]
        hook.until(lambda: kinds(hook)[2:] == ["rollout_started", "step_reached"])
        agent.call("POST", "/v1/command", {"command": "pause"})
        hook.until(lambda: len(hook.received) == 5)
        agent.call("POST", "/v1/command", {"command": "promote"})
        assert agent.wait_rollout(rollout)["status"] == "completed"
        hook.until(lambda: len(hook.received) == 6)

        rollback = agent.call("POST", "/v1/rollback")["id"]
        assert agent.wait_rollout(rollback)["status"] == "completed"
        hook.until(lambda: len(hook.received) == 8)

    bodies = [r.json for r in hook.received]
    assert [(b["event"], b["message"]) for b in bodies] == [
        ("rollout_started", "bluegreen rollout 1 started: nothing -> v1"),
        ("promoted", f"rollout 1 promoted v1: {bodies[1]['reason']}"),
        ("rollout_started", "canary rollout 2 started: v1 -> v2"),
        (
            "step_reached",
            "rollout 2: step 1/1: weight 50% (1 instance), waiting for `nonstop promote`",
        ),
        ("paused", "rollout 2 paused: paused by operator"),
        ("promoted", f"rollout 2 promoted v2: {bodies[5]['reason']}"),
        ("rollout_started", "rollback 3 started: v2 -> v1"),
        ("rolled_back", f"rollback 3 to v1 completed: {bodies[7]['reason']}"),
    ]
    assert (bodies[3]["step"], bodies[3]["weight"]) == (1, 50)
    assert {b["app"] for b in bodies} == {"shop"}
    assert all(r.headers["X-Nonstop-Signature"].startswith("sha256=") for r in hook.received)
    events = [e["message"] for e in agent.call("GET", "/v1/events?limit=1000")]
    assert not [m for m in events if m.startswith("notify ")], events


def test_a_guarded_flag_disabled_by_its_rollout_is_told(
    project: Project, agent: AgentProcess
) -> None:
    with ThreadedReceiver() as hook:
        notify = f'[[notify]]\nurl = "{hook.url}"\nevents = ["flag_disabled"]\n'
        project.write_config(extra=notify)
        agent.start()
        assert agent.wait_rollout(agent.deploy("v1", ERROR_RATE="0.5")["id"])["status"] == (
            "completed"
        )
        project.cli("flags", "create", "checkout", check=True)
        project.cli(
            "flags", "rollout", "checkout", "--steps", "10,50,100", "--every", "1h",
            "--max-error-rate", "0.05", "--min-requests", "20", check=True,
        )  # fmt: skip
        for _ in range(60):  # half of them fail: the rollout disables the flag
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(project.url, timeout=10).close()
        hook.until(lambda: len(hook.received) == 1)
    body = hook.received[0].json
    assert body["event"] == "flag_disabled"
    assert body["flag"] == "checkout"
    assert body["rollout"] is None
    assert "is above 5.0% at step 1 of 3 (10%)" in body["reason"]
    assert body["message"] == f"flag checkout disabled by its guarded rollout: {body['reason']}"


def test_an_unset_secret_stops_the_agent_before_anything_starts(
    project: Project, agent: AgentProcess
) -> None:
    notify = '[[notify]]\nurl = "http://127.0.0.1:9/hook"\nsecret = "$NONSTOP_TEST_NO_SUCH_VAR"\n'
    project.write_config(extra=notify)
    agent.start(wait=False)
    assert agent.wait_exit() == 2
    assert (
        "error: notify[0].secret: the environment variable NONSTOP_TEST_NO_SUCH_VAR is not set"
        in agent.log_tail()
    )
    assert not (project.paths.state / "router").exists()


def test_a_hung_receiver_does_not_hold_a_rollout_back(
    project: Project, agent: AgentProcess
) -> None:
    with ThreadedReceiver() as hook:
        hold = asyncio.Event()  # every request waits for this: the receiver hangs
        hook.receiver.hold = hold
        project.write_config(extra=f'[[notify]]\nurl = "{hook.url}"\ntimeout = "2s"\n')
        agent.start()
        rollout = agent.deploy("v1")["id"]
        hook.until(lambda: hook.receiver.attempts >= 1)  # "started" is stuck in the receiver
        assert agent.wait_rollout(rollout)["status"] == "completed"  # the rollout is not
        assert hook.received == []
        hook.loop.call_soon_threadsafe(hold.set)
        hook.until(lambda: deliveries(hook) == 2)
    kinds_seen = {r.headers["X-Nonstop-Delivery"]: r.json["event"] for r in hook.received}
    assert sorted(kinds_seen.values()) == ["promoted", "rollout_started"]


def deliveries(hook: ThreadedReceiver) -> int:
    """Distinct notices received (a retry after a timeout may arrive twice: same delivery id)."""
    return len({r.headers["X-Nonstop-Delivery"] for r in hook.received})
