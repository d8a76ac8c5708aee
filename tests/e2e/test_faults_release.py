"""Truth under faults, end to end: a real agent, a real router, real app processes, real load.

A release that passes its readiness check and then dies must never be reported as serving:
every response the router sends while it is meant to serve (its own 502/503 included) is that
release's, an instance that keeps dying is failed, and no phase waits forever. What a rollout
leaves behind (weights, the releases waiting to retire) is exactly what it promised."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.harness import ROUTER_KINDS, AgentProcess, Project
from e2e.test_bluegreen import first_deploy, load, settle

pytestmark = pytest.mark.slow

APP_ENV = '\n[app.env]\nGREETING = "hello"\n'


def wait_until(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def served(agent: AgentProcess) -> dict[tuple[str, str], float]:
    """``nonstop_requests_total`` by (release, code class), from the agent's /metrics."""

    async def fetch() -> str:
        connector = aiohttp.UnixConnector(path=str(agent.project.paths.socket))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://agent/metrics") as response,
        ):
            return await response.text()

    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(asyncio.run(fetch())):
        for sample in family.samples:
            if sample.name == "nonstop_requests_total":
                counts[(sample.labels["release"], sample.labels["code_class"])] = sample.value
    return counts


@pytest.mark.parametrize("router_kind", ROUTER_KINDS)
def test_crashing_release_rolls_back_and_kept_release_redeploys(
    project: Project, agent: AgentProcess
) -> None:
    project.write_config(watch="1s", extra=APP_ENV)
    agent.start()
    first_deploy(agent)

    # v2 answers its health check, then exits 1 a second later, every time it is restarted.
    project.write_config(watch="30s", extra=APP_ENV)
    with load(project, rps=50) as bg:
        settle()
        row = agent.deploy("v2", CRASH_AFTER_READY="1")
        done = agent.wait_rollout(row["id"], timeout=120)
        settle()
    report = bg.report
    assert report is not None
    assert done["status"] == "rolled_back", done
    # Either the errors (the router's own 502/503 are v2's now) or the crash loop ends it.
    assert "watch:" in done["reason"], done["reason"]
    status = agent.status()
    assert status["active_release"] == "v1"
    assert status["weights"] == {"v1": 100}
    counts = served(agent)
    assert report.failed > 0, (report.to_dict(), counts)  # clients saw it, and so did the watch
    assert counts.get(("v2", "5xx"), 0) > 0, counts
    assert counts.get(("(unrouted)", "5xx"), 0) == 0, counts  # every router-made 5xx is charged

    # A good release next, then the kept v1 again: same config, same name -> it redeploys.
    project.write_config(watch="1s", extra=APP_ENV)
    done = agent.wait_rollout(agent.deploy("v3")["id"], timeout=120)
    assert done["status"] == "completed", done["reason"]
    status = agent.status()
    assert status["weights"] == {"v3": 100}
    assert set(status["retire"]) <= set(status["desired"]), status

    done = agent.wait_rollout(agent.deploy("v1")["id"], timeout=120)
    assert done["status"] == "completed", done["reason"]
    status = agent.status()
    assert status["active_release"] == "v1"
    assert status["weights"] == {"v1": 100}
    assert set(status["retire"]) <= set(status["desired"]), status


def test_crash_loop_after_readiness_ends_a_deploy_instead_of_hanging(
    project: Project, agent: AgentProcess
) -> None:
    config = project.paths.config
    project.write_config(watch="30s")  # a first deploy checks min(check_duration, watch): 10 s
    config.write_text(config.read_text().replace("replicas = 2", "replicas = 4"))
    agent.start()
    # Every instance passes its health check, then exits 0.3 s later: ready lines, then dead.
    row = agent.deploy("v1", CRASH_AFTER_READY="0.3")
    done = agent.wait_rollout(row["id"], timeout=180)
    assert done["status"] == "aborted", done
    assert "crash-looping" in done["reason"] or "restarted" in done["reason"], done["reason"]
    status = agent.status()
    assert status["active_release"] is None
    assert "v1" not in status["desired"]
    wait_until(
        "v1's instances to stop",
        lambda: not [i for i in agent.status()["instances"] if i["state"] != "stopped"],
        timeout=90,
    )
