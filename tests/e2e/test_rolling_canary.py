"""Rolling updates and canaries end to end, under load, on every router kind."""

from __future__ import annotations

import pytest

from e2e.harness import ROUTER_KINDS, AgentProcess, Project
from e2e.test_bluegreen import assert_zero_failures, first_deploy, load, settle

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("router_kind", ROUTER_KINDS)]

ROLLING = """
[strategy.rolling]
max_surge = 1
max_unavailable = 0
"""

CANARY = """
[strategy.canary]
steps = [{ weight = 20, pause = "2s" }, { weight = 50, pause = "2s" }]
sequential = true

[[strategy.canary.analysis]]
metric = "error_rate"
max = 0.05
min_samples = 20
interval = "1s"
"""


def test_rolling_update_replaces_instances_without_a_failed_request(
    project: Project, agent: AgentProcess
) -> None:
    """Each replaced instance is a routing change: HAProxy makes it without a reload and nginx
    with a graceful one, both held to zero failed requests; Caddy reloads, and its rare reload
    race is told apart."""
    project.write_config(extra=ROLLING)
    text = (project.root / "nonstop.toml").read_text().replace("replicas = 2", "replicas = 3")
    text = text.replace('kind = "bluegreen"', 'kind = "rolling"')
    (project.root / "nonstop.toml").write_text(text)
    agent.start()
    first_deploy(agent)
    with load(project) as bg:
        settle()
        done = agent.wait_rollout(agent.deploy("v2")["id"], timeout=90)
        settle()
    assert done["status"] == "completed", done
    report = assert_zero_failures(bg, caddy_reload_race=project.router == "caddy")
    assert set(report.groups) == {"v1", "v2"}
    status = agent.status()
    releases = sorted(i["release"] for i in status["instances"] if i["state"] == "ready")
    assert releases == ["v2", "v2", "v2"]
    # Exactly the state it promises: all traffic to v2, nothing left to retire (v1 is gone).
    assert status["weights"] == {"v2": 100}
    assert "v1" not in status["retire"], status["retire"]
    # Never more than replicas + surge instances at once (from the journal of scale actions).
    rollout = agent.call("GET", f"/v1/rollouts/{done['id']}")
    desired: dict[str, int] = {"v1": 3}
    for entry in rollout["journal"]:
        action = entry["action"]
        if action["kind"] == "scale":
            desired[action["release"]] = action["replicas"]
            assert sum(desired.values()) <= 4, rollout["journal"]


SMALL_STEPS = """
[strategy.canary]
steps = [{ weight = 1, pause = "6s" }, { weight = 5, pause = "10s" }]
sequential = true
weight_tolerance = 0.02
"""


def _canary_project(project: Project, canary: str = CANARY) -> None:
    project.write_config(extra=canary)
    text = (
        (project.root / "nonstop.toml").read_text().replace('kind = "bluegreen"', 'kind = "canary"')
    )
    (project.root / "nonstop.toml").write_text(text)


def test_good_canary_walks_its_steps_and_completes(project: Project, agent: AgentProcess) -> None:
    _canary_project(project)
    agent.start()
    first_deploy(agent)
    with load(project) as bg:
        settle()
        done = agent.wait_rollout(agent.deploy("v2")["id"], timeout=90)
        settle()
    assert done["status"] == "completed", done
    assert_zero_failures(bg)
    events = [e["message"] for e in agent.call("GET", f"/v1/events?rollout={done['id']}")]
    assert any("20" in e and "weight" in e.lower() for e in events), events
    assert agent.status()["active_release"] == "v2"


def test_bad_canary_is_rolled_back_by_itself_with_the_failing_check(
    project: Project, agent: AgentProcess
) -> None:
    _canary_project(project)
    agent.start()
    first_deploy(agent)
    with load(project, rps=200) as bg:
        settle()
        done = agent.wait_rollout(agent.deploy("v2", ERROR_RATE="0.3")["id"], timeout=90)
        settle()
    assert done["status"] == "rolled_back", done
    assert "v2" in done["reason"]
    status = agent.status()
    assert status["active_release"] == "v1"
    assert status["weights"] == {"v1": 100}
    report = bg.report
    assert report is not None
    assert report.counts["transport"] == 0
    assert report.counts["timeout"] == 0
    # Only the canary's own 500s failed, and it was stopped early: far fewer than 30% of traffic.
    assert 0 < report.counts["5xx"] < report.scheduled * 0.1


def test_data_plane_weight_check_passes_at_1_and_5_percent(
    project: Project, agent: AgentProcess
) -> None:
    """The router sends what was set, measured from its own request stream: at 1% and 5% the
    canary's share (99% interval) lies within 2 points, on every router kind. A step without
    analysis ends with its pause, verified or not: the pauses are long enough at 200 req/s for
    a router that sends what was set (1,200 and 2,000 requests: the interval at 5% is about
    +-1.3 points)."""
    _canary_project(project, SMALL_STEPS)
    agent.start()
    first_deploy(agent)
    with load(project, rps=200) as bg:
        settle()
        done = agent.wait_rollout(agent.deploy("v2")["id"], timeout=120)
        settle()
    events = [e["message"] for e in agent.call("GET", f"/v1/events?rollout={done['id']}")]
    assert done["status"] == "completed", (done, events)
    assert_zero_failures(bg, caddy_reload_race=project.router == "caddy")
    for weight in (1, 5):
        verified = [e for e in events if f"within 2 points of the set weight {weight}%" in e]
        assert len(verified) == 1, "\n".join(events)
        assert verified[0].startswith("data plane canary share "), verified
