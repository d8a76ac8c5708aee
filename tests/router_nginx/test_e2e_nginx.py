"""The agent with ``[router] kind = "nginx"``: the blue-green deploy under load of the e2e suite
(tests/e2e/test_bluegreen.py), unchanged, nginx owning the port."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e import harness
from e2e.conftest import agent, project
from e2e.test_bluegreen import test_first_deploy_then_bluegreen_under_load

pytestmark = pytest.mark.slow

__all__ = ["agent", "project", "test_first_deploy_then_bluegreen_under_load"]


@pytest.fixture(autouse=True)
def nginx_router(nginx_binary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every config the harness writes asks for the nginx router."""
    assert "[router]\n" in harness.BASE_CONFIG
    config = harness.BASE_CONFIG.replace("[router]\n", '[router]\nkind = "nginx"\n')
    monkeypatch.setattr(harness, "BASE_CONFIG", config)


def test_the_agent_runs_nginx(project: harness.Project, agent: harness.AgentProcess) -> None:
    agent.start()
    router = agent.status()["router"]
    assert (router["kind"], router["alive"]) == ("nginx", True)
    assert (project.paths.state / "router" / "nginx.pid").exists()
