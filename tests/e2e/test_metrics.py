"""The agent's /metrics scraped by a real Prometheus with a bearer token, during a real canary
held at its step; the Grafana dashboard in docs/ queries only metrics the agent exposes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2e.harness import AgentProcess, Project, free_port
from e2e.test_bluegreen import first_deploy
from nonstop_testing import REPO_ROOT, require_binary
from prometheus.promserver import PrometheusServer

pytestmark = pytest.mark.slow

TOKEN = "scrape-t0ken"
SETTINGS = """
[strategy.canary]
steps = [{ weight = 50, pause = {} }]
sequential = false

[agent]
listen = "127.0.0.1:AGENT"

[metrics]
token = "$NONSTOP_TEST_METRICS_TOKEN"
"""
SCRAPE = """\
  - job_name: nonstop
    scrape_interval: 1s
    authorization:
      credentials: {token}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""
GRAFANA = REPO_ROOT / "docs" / "grafana" / "nonstop.json"
ALERTS = REPO_ROOT / "docs" / "prometheus" / "nonstop-alerts.yml"


@pytest.fixture
def agent_port() -> int:
    return free_port()


@pytest.fixture
def prometheus(tmp_path: Path, agent_port: int) -> Iterator[PrometheusServer]:
    scrape = SCRAPE.format(token=TOKEN, port=agent_port) + f'rule_files: ["{ALERTS}"]\n'
    server = PrometheusServer(require_binary("prometheus"), tmp_path / "prometheus", scrape)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def socket_get(project: Project, path: str, token: str) -> tuple[int, str]:
    """GET over the agent's unix socket."""

    async def fetch() -> tuple[int, str]:
        connector = aiohttp.UnixConnector(path=str(project.paths.socket))
        async with aiohttp.ClientSession(connector=connector) as session:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(f"http://agent{path}", headers=headers) as response:
                return response.status, await response.text()

    return asyncio.run(fetch())


def one(prometheus: PrometheusServer, promql: str) -> float:
    [series] = prometheus.query(promql)
    return float(series["value"][1])


def test_prometheus_scrapes_the_agent_with_a_token_during_a_canary(
    project: Project, agent: AgentProcess, prometheus: PrometheusServer, agent_port: int
) -> None:
    project.write_config(extra=SETTINGS.replace("AGENT", str(agent_port)))
    agent.start(env={"NONSTOP_TEST_METRICS_TOKEN": TOKEN})
    first_deploy(agent)
    text = (project.root / "nonstop.toml").read_text()
    (project.root / "nonstop.toml").write_text(text.replace('"bluegreen"', '"canary"', 1))
    rollout = agent.deploy("v2")["id"]
    metrics = f"http://127.0.0.1:{agent_port}/metrics"
    assert get(metrics)[0] == 401
    assert get(metrics, "wrong")[0] == 401
    prometheus.wait_targets_up([f"127.0.0.1:{agent_port}"])
    prometheus.wait_value('nonstop_rollout_phase{phase="step",candidate="v2",stable="v1"}', 1)
    shares: list[dict[str, Any]] = []
    sent = 0
    while not shares:  # traffic until a scrape saw the measured weights (last 10 s of it)
        for _ in range(10):
            assert get(project.url)[0] == 200
            sent += 1
        shares = prometheus.query("sum(nonstop_weight_measured_percent)")
        assert sent < 2000, "no scrape ever saw the measured weights"
    assert float(shares[0]["value"][1]) == pytest.approx(100)
    prometheus.wait_value("sum(nonstop_requests_total)", sent)
    assert one(prometheus, "nonstop_router_up") == 1
    assert one(prometheus, "nonstop_agent_degraded") == 0
    assert one(prometheus, "nonstop_rollout_in_progress") == 1
    assert one(prometheus, "nonstop_rollout_step") == 1
    assert one(prometheus, 'nonstop_active_release{release="v1"}') == 1
    assert one(prometheus, 'nonstop_weight_set_percent{release="v2"}') == 50
    assert one(prometheus, 'nonstop_weight_set_percent{release="v1"}') == 50
    assert one(prometheus, 'nonstop_instances{release="v1",state="ready"}') == 2
    assert one(prometheus, 'nonstop_instances{release="v2",state="ready"}') == 1
    assert one(prometheus, 'sum(nonstop_instance_restarts_total{release="v1"})') == 0
    assert one(prometheus, "count(nonstop_request_duration_seconds_bucket)") > 2
    assert one(prometheus, 'nonstop_info{app="shop",router="caddy"}') == 1
    # The unix socket serves the same exposition (the token is required there too).
    assert socket_get(project, "/metrics", "wrong")[0] == 401
    status, exposition = socket_get(project, "/metrics", TOKEN)
    assert status == 200
    assert "nonstop_rollout_phase{" in exposition

    agent.call("POST", "/v1/command", {"command": "promote"})
    assert agent.wait_rollout(rollout)["status"] == "completed"
    prometheus.wait_value("nonstop_rollout_in_progress", 0)
    prometheus.wait_value('nonstop_weight_set_percent{release="v2"}', 100)
    prometheus.wait_value('sum(nonstop_rollouts_total{outcome="completed",rollback="false"})', 2)
    exposed = exposed_names(exposition)
    assert_grafana_uses_only(exposed)
    assert alert_metric_names() <= exposed | {"up"}, alert_metric_names() - exposed
    prometheus.wait_rules_healthy(len(yaml_rules()))


def exposed_names(exposition: str) -> set[str]:
    """Every series name the exposition can have, from its ``# TYPE`` lines (a family with no
    sample at this moment is still declared)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
        "gauge": ("",),
    }
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix({"info": "_info", "counter": "_total"}.get(kind, "\0"))
            names |= {base + s for s in suffixes.get(kind, ("",))}
    return names


def grafana_metric_names() -> set[str]:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return {name for expr in exprs for name in re.findall(r"\bnonstop_[a-z_]+", expr)}


def yaml_rules() -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in ALERTS.read_text().splitlines()
        if "- alert:" in line
    ]


def alert_metric_names() -> set[str]:
    return set(re.findall(r"\bnonstop_[a-z_]+", ALERTS.read_text()))


def test_the_alert_rules_pass_promtool() -> None:
    promtool = require_binary("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(yaml_rules())} rules found" in done.stdout


def assert_grafana_uses_only(exposed: set[str]) -> None:
    used = grafana_metric_names()
    assert len(used) >= 12, used
    assert used <= exposed, f"the dashboard queries metrics the agent lacks: {used - exposed}"


def test_the_grafana_dashboard_is_valid_json_with_a_prometheus_datasource() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["title"] == "nonstop"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["type"] == "prometheus", panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
