"""The blue-green end-to-end suite (tests/e2e/test_bluegreen.py) with ``[router] kind =
"haproxy"``: the same agent, app and load, every test unchanged, HAProxy owning the port."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e import harness
from e2e.conftest import agent, project
from e2e.test_bluegreen import (
    test_agent_killed_at_each_transition_recovers_without_dropping_a_request,
    test_bad_release_aborts_and_old_side_keeps_serving,
    test_crashed_instance_is_restarted_and_rejoins_without_failed_requests,
    test_errors_during_the_watch_switch_back_by_themselves,
    test_failing_smoke_test_aborts_before_any_traffic_moves,
    test_first_deploy_then_bluegreen_under_load,
    test_rollback_while_warm_is_instant_and_loses_nothing,
    test_router_process_dying_is_restarted_and_traffic_resumes,
    test_second_deploy_while_one_runs_is_refused,
    test_smoke_test_sees_the_new_side_directly,
)

pytestmark = pytest.mark.slow

__all__ = [
    "agent",
    "project",
    "test_agent_killed_at_each_transition_recovers_without_dropping_a_request",
    "test_bad_release_aborts_and_old_side_keeps_serving",
    "test_crashed_instance_is_restarted_and_rejoins_without_failed_requests",
    "test_errors_during_the_watch_switch_back_by_themselves",
    "test_failing_smoke_test_aborts_before_any_traffic_moves",
    "test_first_deploy_then_bluegreen_under_load",
    "test_rollback_while_warm_is_instant_and_loses_nothing",
    "test_router_process_dying_is_restarted_and_traffic_resumes",
    "test_second_deploy_while_one_runs_is_refused",
    "test_smoke_test_sees_the_new_side_directly",
]

HAPROXY_ROUTER = '[router]\nkind = "haproxy"\n'


@pytest.fixture(autouse=True)
def haproxy_router(haproxy_binary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every config the harness writes (autouse: before the ``project`` fixture writes the
    first one) asks for the HAProxy router."""
    assert "[router]\n" in harness.BASE_CONFIG
    monkeypatch.setattr(
        harness, "BASE_CONFIG", harness.BASE_CONFIG.replace("[router]\n", HAPROXY_ROUTER)
    )


def test_the_agent_runs_haproxy(project: harness.Project, agent: harness.AgentProcess) -> None:
    agent.start()
    router = agent.status()["router"]
    assert (router["kind"], router["alive"]) == ("haproxy", True)
    assert (project.paths.state / "router" / "haproxy.pid").exists()
