"""A canary judged by Prometheus end to end: a real agent and Caddy, sample app instances
scraped by a real Prometheus (file_sd targets rewritten from the agent's /v1/status), a bad
release rolled back by a PromQL query check; then `nonstop analysis explain` says why."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import AgentProcess, Project
from e2e.test_bluegreen import first_deploy, load, settle
from nonstop.errors import NonstopError
from nonstop_testing import require_binary
from prometheus.promserver import PrometheusServer

pytestmark = pytest.mark.slow

QUERY = (
    '(sum(rate(http_requests_total{status=~"5..",release="{release}"}[{window}])) or vector(0))'
    ' / sum(rate(http_requests_total{release="{release}"}[{window}]))'
)
CANARY = """
[strategy.canary]
steps = [{ weight = 50, pause = "60s" }]
sequential = false
weight_tolerance = 0.2

[[strategy.canary.analysis]]
metric = "query"
query = 'QUERY'
max = 0.05
interval = "4s"

[metrics]
provider = "prometheus"
prometheus_url = "URL"
"""


class TargetWriter:
    """Keeps Prometheus's targets equal to the agent's instances (starting ones included, so
    an instance is scraped before it gets traffic), polling /v1/status every 0.3 s."""

    def __init__(self, agent: AgentProcess, prometheus: PrometheusServer) -> None:
        self.agent, self.prometheus = agent, prometheus
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.seen: set[str] = set()

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                instances = self.agent.status()["instances"]
            except NonstopError:
                continue
            addresses = {i["address"] for i in instances if i["address"]}
            if addresses != self.seen:
                self.prometheus.set_targets(addresses)
                self.seen = addresses


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(require_binary("prometheus"), tmp_path / "prometheus")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_bad_canary_is_rolled_back_by_a_prometheus_query_check(
    project: Project, agent: AgentProcess, prometheus: PrometheusServer
) -> None:
    project.write_config(extra=CANARY.replace("QUERY", QUERY).replace("URL", prometheus.url))
    path = project.root / "nonstop.toml"
    path.write_text(path.read_text().replace('kind = "bluegreen"', 'kind = "canary"'))
    agent.start()
    targets = TargetWriter(agent, prometheus)
    targets.thread.start()
    try:
        first_deploy(agent)
        with load(project, rps=100) as bg:
            v1 = [i["address"] for i in agent.status()["instances"]]
            prometheus.wait_targets_up(v1)
            settle(2.0)  # a few scrapes of v1 under load
            row = agent.deploy("v2", ERROR_RATE="0.3", STARTUP_DELAY="2")
            done = agent.wait_rollout(row["id"], timeout=90)
            settle()
    finally:
        targets.stop.set()
        targets.thread.join(5)
    events = [e["message"] for e in agent.call("GET", f"/v1/events?rollout={done['id']}")]
    assert done["status"] == "rolled_back", (done["reason"], events)
    assert "analysis failed: query failed 1 of 1 judged windows" in done["reason"], done
    assert "(canary v2," in done["reason"]
    status = agent.status()
    assert status["active_release"] == "v1"
    assert status["weights"] == {"v1": 100}
    report = bg.report
    assert report is not None
    assert report.counts["transport"] == 0
    assert report.counts["timeout"] == 0
    # With Prometheus judging, the router's own stream still learns who serves: the agent's
    # /metrics charges requests to releases, not to "(unknown)".
    metrics = _agent_metrics(project)
    assert 'nonstop_requests_total{code_class="2xx",release="v1"}' in metrics, metrics
    assert 'release="(unknown)"' not in metrics, metrics
    _explain(project, done)


def _agent_metrics(project: Project) -> str:
    """GET /metrics over the agent's unix socket (the one route that needs no token)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(project.paths.socket))
        sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _explain(project: Project, done: dict[str, object]) -> None:
    raw = project.cli("analysis", "explain", "--json", check=True)
    data = json.loads(raw.stdout)
    assert data["rollout"]["id"] == done["id"]
    assert data["rollout"]["status"] == "rolled_back"
    assert data["reason"] == done["reason"]
    assert data["sequential"] is None  # sequential = false
    [background] = data["analyses"]
    assert background["name"] == "background"
    assert background["phase"] == "failed"
    assert background["verdict"]["outcome"] == "fail"
    [row] = background["rows"]
    assert row["check"] == "query"
    assert row["verdict"] == "fail"
    assert row["threshold"] == "<= 0.05"
    assert row["value"] > 0.05
    assert row["reason"].startswith(f"query {row['value']:.2g}"[:8])
    text = project.cli("analysis", "explain", "--rollout", str(done["id"]), check=True).stdout
    assert f"rollout {done['id']}" in text
    assert "rolled back" in text
    assert "background analysis" in text
    assert "<= 0.05" in text
    assert "reason" in text
    missing = project.cli("analysis", "explain", "--rollout", "999")
    assert missing.returncode == 2
    assert "no rollout 999" in missing.stderr


ROUTER_QUERY = """
[strategy.canary]
steps = [{ weight = 50, pause = "60s" }]
sequential = false
weight_tolerance = 0.2

[[strategy.canary.analysis]]
metric = "query"
query = 'sum(rate(http_requests_total{release="{release}"}[{window}]))'
max = 1000
interval = "1s"
"""


def test_query_check_with_the_router_provider_pauses_with_the_reason(
    project: Project, agent: AgentProcess
) -> None:
    """No Prometheus configured: the query check is inconclusive (never a pass) and, after
    inconclusive_limit windows, the rollout waits for a person, saying why."""
    project.write_config(extra=ROUTER_QUERY)
    path = project.root / "nonstop.toml"
    path.write_text(path.read_text().replace('kind = "bluegreen"', 'kind = "canary"'))
    agent.start()
    first_deploy(agent)
    with load(project, rps=100):
        row = agent.deploy("v2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not agent.status()["rollout"]["paused"]:
            time.sleep(0.2)
        data = agent.call("GET", "/v1/analysis")
        agent.call("POST", "/v1/command", {"command": "abort"})
        done = agent.wait_rollout(row["id"])
    assert data["rollout"]["id"] == row["id"]
    [background] = data["analyses"]
    assert background["phase"] == "inconclusive"
    [check] = background["rows"]
    assert check["verdict"] == "inconclusive"
    assert check["reason"].startswith(
        "query: query checks need [metrics] provider = prometheus (canary v2, "
    )
    assert done["status"] == "rolled_back"
    assert done["reason"] == "abort requested by operator"
