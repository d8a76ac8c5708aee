"""The dashboard's listener under a real agent: login enforced, links single use, cookies,
CSRF and Origin checks, and `nonstop dashboard` (the browser tests are in test_browser.py)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import urllib.parse
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from dashboard.scenario import base_url, dashboard_cli, login_link
from e2e.harness import AgentProcess, Project
from nonstop_testing import require_binary

pytestmark = pytest.mark.slow


def request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def log_in(agent: AgentProcess) -> tuple[str, str]:
    """(base URL, session cookie value) from a fresh one-time link."""
    link = login_link(agent)
    status, headers, body = request(link)
    assert status == 200, body
    cookie = SimpleCookie(headers["Set-Cookie"])
    return base_url(link), cookie["nonstop_session"].value


@pytest.fixture
def dashboard_agent(project: Project, agent: AgentProcess) -> AgentProcess:
    project.write_config(extra='\n[dashboard]\nlisten = "127.0.0.1:0"\n')
    agent.start()
    return agent


def test_nothing_is_served_without_a_session(dashboard_agent: AgentProcess) -> None:
    base = base_url(login_link(dashboard_agent))
    for path in ("/", "/history", "/rollouts/1", "/static/app.js", "/static/index.html"):
        status, _, body = request(base + path)
        assert status == 401, (path, body)
        assert "nonstop dashboard" in body
    for path in ("/api/overview", "/api/stream?page=overview", "/api/session"):
        status, headers, body = request(base + path)
        assert (status, headers["Content-Type"].split(";")[0]) == (401, "application/json")
    status, _, _ = request(base + "/api/actions/pause", "POST")
    assert status == 401
    status, _, _ = request(base + "/", headers={"Cookie": "nonstop_session=forged"})
    assert status == 401


def test_a_login_link_works_once_and_sets_a_strict_http_only_cookie(
    dashboard_agent: AgentProcess,
) -> None:
    link = login_link(dashboard_agent)
    status, headers, body = request(link)
    assert status == 200
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback: a Secure cookie would never return
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    again, _, body = request(link)
    assert again == 401
    assert "used or expired" in body
    wrong, _, _ = request(base_url(link) + "/login?token=not-a-token")
    assert wrong == 401


def test_a_session_reads_pages_and_data(dashboard_agent: AgentProcess) -> None:
    base, session = log_in(dashboard_agent)
    cookie = {"Cookie": f"nonstop_session={session}"}
    status, _, body = request(base + "/", headers=cookie)
    assert status == 200
    assert "/static/app.js" in body
    status, headers, _ = request(base + "/static/app.js", headers=cookie)
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/javascript")
    status, _, body = request(base + "/static/../daemon.py", headers=cookie)
    assert status == 404
    status, _, body = request(base + "/api/overview", headers=cookie)
    assert status == 200
    assert '"router"' in body
    assert '"measured_weights"' in body


def test_actions_need_the_csrf_token_and_a_matching_origin(
    dashboard_agent: AgentProcess,
) -> None:
    base, session = log_in(dashboard_agent)
    cookie = {"Cookie": f"nonstop_session={session}"}
    status, _, body = request(base + "/api/actions/pause", "POST", cookie)
    assert status == 403
    assert "CSRF" in body
    _, _, body = request(base + "/api/session", headers=cookie)
    csrf = json.loads(body)["csrf"]
    wrong = {**cookie, "X-CSRF-Token": csrf + "x"}
    assert request(base + "/api/actions/pause", "POST", wrong)[0] == 403
    evil = {**cookie, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert request(base + "/api/actions/pause", "POST", evil)[0] == 403
    good = {**cookie, "X-CSRF-Token": csrf, "Origin": base}
    status, _, body = request(base + "/api/actions/pause", "POST", good)
    # Authorised, and the engine's own answer: nothing to pause without a rollout.
    assert status == 409
    assert "no rollout is in progress" in body
    status, _, body = request(base + "/api/actions/explode", "POST", good)
    assert status == 400


def test_nonstop_dashboard_prints_a_link(project: Project, dashboard_agent: AgentProcess) -> None:
    result = dashboard_cli(project)
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert link.startswith("http://127.0.0.1:")
    assert "/login?token=" in link
    assert "works once" in result.stderr
    assert request(link)[0] == 200
    status = project.cli("status", check=True)
    assert f"dashboard: {base_url(link)} (`nonstop dashboard` logs you in)" in status.stdout
    as_json = dashboard_cli(project, "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["url"].startswith(data["base_url"] + "/login?token=")
    assert data["expires_in"] == 120


def test_logging_out_ends_the_session(dashboard_agent: AgentProcess) -> None:
    base, session = log_in(dashboard_agent)
    cookie = {"Cookie": f"nonstop_session={session}"}
    _, _, body = request(base + "/api/session", headers=cookie)
    csrf = json.loads(body)["csrf"]
    assert request(base + "/logout", "POST", cookie)[0] == 403  # CSRF needed here too
    status, headers, _ = request(base + "/logout", "POST", {**cookie, "X-CSRF-Token": csrf})
    assert status == 200
    assert "nonstop_session=" in headers["Set-Cookie"]  # the browser forgets it too
    assert request(base + "/api/overview", headers=cookie)[0] == 401


def test_nonstop_dashboard_says_how_to_turn_it_on(project: Project, agent: AgentProcess) -> None:
    agent.start()
    result = dashboard_cli(project)
    assert result.returncode == 1, result.stdout
    assert "the dashboard is off" in result.stderr
    assert '[dashboard] listen = "127.0.0.1:8470"' in result.stderr


def test_nonstop_dashboard_open_hands_the_link_to_a_browser(
    project: Project, dashboard_agent: AgentProcess, tmp_path: Path
) -> None:
    seen = tmp_path / "opened.txt"
    browser = tmp_path / "record-url"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {seen}\n')
    browser.chmod(0o755)
    result = dashboard_cli(project, "--open", env={"BROWSER": str(browser)})
    assert result.returncode == 0, result.stderr
    assert seen.read_text() == result.stdout.strip()


def test_a_port_in_use_stops_the_agent_start_with_the_key(
    project: Project, agent: AgentProcess
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project.write_config(extra=f'\n[dashboard]\nlisten = "127.0.0.1:{port}"\n')
        agent.start(wait=False)
        assert agent.wait_exit(60) != 0
    log = agent.log_tail()
    assert f"the dashboard cannot listen on 127.0.0.1:{port}" in log
    assert "dashboard.listen in nonstop.toml" in log


def test_over_https_the_session_cookie_is_secure(project: Project, agent: AgentProcess) -> None:
    openssl = require_binary("openssl")
    cert, key = project.root / "cert.pem", project.root / "key.pem"
    args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x"]
    subprocess.run(
        [openssl, *args, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    # Relative to the project, as every path in nonstop.toml.
    project.write_config(
        extra='\n[dashboard]\nlisten = "127.0.0.1:0"\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n'
    )
    agent.start()
    link = login_link(agent)
    assert link.startswith("https://127.0.0.1:")
    parts = urllib.parse.urlsplit(link)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # a throwaway certificate that names no host
    conn = http.client.HTTPSConnection(parts.netloc, timeout=30, context=context)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        response = conn.getresponse()
        assert response.status == 200
        cookie = response.getheader("Set-Cookie") or ""
    finally:
        conn.close()
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


def test_a_certificate_that_cannot_load_stops_the_start(
    project: Project, agent: AgentProcess
) -> None:
    project.write_config(
        extra='\n[dashboard]\nlisten = "127.0.0.1:0"\ntls_cert = "no.pem"\ntls_key = "no.key"\n'
    )
    agent.start(wait=False)
    assert agent.wait_exit(60) != 0
    log = agent.log_tail()
    assert f"dashboard.tls_cert / tls_key: cannot load {project.root}/no.pem" in log
    assert "Traceback" not in log


def test_the_agent_serves_metrics_on_the_dashboard_only_behind_its_token(
    project: Project, agent: AgentProcess
) -> None:
    project.write_config(
        extra='\n[dashboard]\nlisten = "127.0.0.1:0"\n\n[metrics]\ntoken = "s3cret-scrape"\n'
    )
    agent.start()
    base = base_url(login_link(agent))
    assert request(base + "/metrics")[0] == 401
    assert request(base + "/metrics", headers={"Authorization": "Bearer wrong"})[0] == 401
    status, headers, body = request(
        base + "/metrics", headers={"Authorization": "Bearer s3cret-scrape"}
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    assert "nonstop_" in body
    assert "Set-Cookie" not in headers


def test_without_a_metrics_token_the_dashboard_serves_no_metrics(
    dashboard_agent: AgentProcess,
) -> None:
    base = base_url(login_link(dashboard_agent))
    status, _, _ = request(base + "/metrics", headers={"Authorization": "Bearer anything"})
    assert status == 401


def test_a_canary_waiting_for_a_person_says_what_it_waits_for_and_its_last_verdict(
    project: Project, agent: AgentProcess
) -> None:
    """Step 1 waits for `nonstop promote` (``pause = {}``) under load: while the data-plane
    check counts, the checks say they wait for it (not "was never measured"); once they judge,
    the rollout's line carries the last real verdict, and a pause says it waits for a person."""
    from dashboard.scenario import canary_project, rollout_phase
    from e2e.test_bluegreen import first_deploy, load
    from nonstop_testing import wait_for

    canary_project(project)
    agent.start()
    first_deploy(agent)
    base, session = log_in(agent)
    cookie = {"Cookie": f"nonstop_session={session}"}

    def rollout_page(rollout: int) -> dict[str, Any]:
        status, _, body = request(f"{base}/api/rollouts/{rollout}", headers=cookie)
        assert status == 200, body
        page: dict[str, Any] = json.loads(body)
        return page

    with load(project, rps=60):
        rollout = agent.deploy("v2")["id"]
        wait_for("step 1", lambda: rollout_phase(agent) == ("step", 0), timeout=90)
        seen: list[str] = []

        def judged() -> bool:
            page = rollout_page(rollout)
            reasons = [a["verdict"]["reason"] for a in page["analysis"]["analyses"]]
            seen.extend([*reasons, page["verdict"]["reason"]])
            return "last verdict: error_rate" in page["verdict"]["reason"]

        wait_for("a judged window in the rollout's line", judged, timeout=120)
        assert not [r for r in seen if "never measured" in r], seen
        assert all(r for r in seen), seen
        waits = [r for r in seen if "data-plane check" in r]
        assert waits, seen  # 60 requests/s at 25%: hundreds of requests before it can tell
        assert "step 1/2 waits for `nonstop promote`" in seen[-1]

        project.cli("pause", check=True)
        wait_for("paused", lambda: agent.status()["rollout"]["paused"])
        verdict = rollout_page(rollout)["verdict"]
        assert verdict["outcome"] == "paused"
        assert verdict["reason"].startswith("paused for a person (paused by operator); last ")
        shown = project.cli("status", check=True).stdout
        assert "paused for a person (paused by operator); last verdict: error_rate" in shown
        project.cli("abort", check=True)
    agent.wait_rollout(rollout)
