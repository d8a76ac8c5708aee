"""The dashboard in a real headless Chromium (Debian's, driven by Selenium through Debian's
chromedriver) during a real canary: real agent, real Caddy, real instances, real load.

Screenshots go to $NONSTOP_ARTIFACTS (default: the test's temp dir) as artifacts."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.scenario import (
    backfill_rows_done,
    base_url,
    browser_paths,
    canary_project,
    cli_process,
    login_link,
    migrations_project,
    rollout_phase,
    start_browser,
)
from e2e.harness import AgentProcess, Project, free_port
from e2e.test_bluegreen import first_deploy, load
from nonstop_testing import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    found = browser_paths()
    if found is None:
        reason = "chromium and chromium-driver are not installed (scripts/install-system-deps.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    driver = start_browser(tmp_path / "chromium-profile", *found)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NONSTOP_ARTIFACTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def text_of(browser: Any, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def shows(browser: Any, css: str, text: str) -> Any:
    """A condition for wait_for: the element holds ``text``."""
    return lambda: text in text_of(browser, css)


def measured_share(browser: Any) -> float:
    """The overview's measured share of v2, in percent (-1 while there is none)."""
    text = text_of(browser, 'tr[data-release="v2"] td.measured-share').rstrip("%")
    return float(text) if text not in ("", "-") else -1.0


def count(browser: Any, css: str) -> int:
    return int(browser.execute_script(f"return document.querySelectorAll('{css}').length"))


def act(browser: Any, action: str) -> None:
    """Click an action's button and confirm in the dialog it opens."""
    click(browser, f'button[data-action="{action}"]')
    confirm(browser)
    wait_for(f"the {action} result", shows(browser, "#toast", f"{action} requested"))


def click(browser: Any, css: str) -> None:
    """Click the element, found afresh if a live update replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        try:
            browser.find_element(By.CSS_SELECTOR, css).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(f"a click on {css}", attempt)


def confirm(browser: Any) -> None:
    wait_for(
        "the confirmation dialog",
        lambda: browser.execute_script("return document.getElementById('confirm').open"),
    )
    click(browser, "#confirm-ok")


def test_login_is_enforced_in_the_browser(
    project: Project, agent: AgentProcess, browser: Any, shots: Path
) -> None:
    canary_project(project)
    agent.start()
    link = login_link(agent)
    browser.get(base_url(link) + "/")
    assert "Not logged in" in browser.page_source
    browser.get(link)
    wait_for("the overview", lambda: text_of(browser, "#active-release"))
    assert browser.get_cookie("nonstop_session")["httpOnly"] is True
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: not for scripts
    browser.get(link)  # the same link again: spent
    assert "used or expired" in browser.page_source
    browser.save_screenshot(str(shots / "login-link-spent.png"))
    browser.get(login_link(agent))  # a new link: in again, then out
    wait_for("the live stream", lambda: text_of(browser, "#live") == "live")
    click(browser, "#logout")
    wait_for("logged out", lambda: "Not logged in" in browser.page_source)
    assert browser.get_cookie("nonstop_session") is None


def test_a_live_canary_in_the_dashboard(
    project: Project, agent: AgentProcess, browser: Any, shots: Path
) -> None:
    canary_project(project)
    agent.start()
    first_deploy(agent)
    browser.get(login_link(agent))
    wait_for("the active release", lambda: text_of(browser, "#active-release") == "v1")
    wait_for("the live stream", lambda: text_of(browser, "#live") == "live")
    browser.execute_script("window.notReloaded = true")
    with load(project, rps=60):
        rollout = agent.deploy("v2")["id"]
        # Server-sent events bring the rollout onto the page already open: no reload.
        wait_for("the rollout on the overview", shows(browser, "#rollout-summary", "rollout"))
        wait_for("step 1", lambda: rollout_phase(agent) == ("step", 0), timeout=90)
        wait_for("phase step shown", lambda: text_of(browser, "#rollout-phase") == "step")
        wait_for("v2's measured share near its 25%", lambda: 15 <= measured_share(browser) <= 35)
        assert browser.execute_script("return window.notReloaded") is True
        browser.save_screenshot(str(shots / "overview.png"))

        browser.get(base_url(browser.current_url) + f"/rollouts/{rollout}")
        wait_for(
            "charts of both releases",
            lambda: (
                count(browser, "svg.chart path[data-release=v1]") == 4
                and count(browser, "svg.chart path[data-release=v2]") == 4
            ),
        )
        wait_for("a step boundary", shows(browser, "#charts", "step 1/2"))
        wait_for("the steps, first under way", lambda: count(browser, ".steps .step-current") == 1)
        assert "until promoted" in text_of(browser, '.steps li[data-step="1"]')
        assert "25%" in text_of(browser, ".steps .step-current")
        wait_for("the analysis table", shows(browser, "tr[data-check]", "error_rate"))
        browser.execute_script("window.notReloaded = true")
        # A live update redraws the page but keeps the same buttons (none vanishes mid-click).
        pause_button = "document.querySelector('button[data-action=pause]')"
        browser.execute_script(f"{pause_button}.kept = true")
        before = text_of(browser, "#analysis")
        wait_for("a live update", lambda: text_of(browser, "#analysis") not in ("", before))
        assert browser.execute_script(f"return {pause_button}.kept") is True

        act(browser, "pause")
        wait_for("paused, live", shows(browser, "#verdict", "paused"))
        browser.save_screenshot(str(shots / "rollout-paused.png"))
        act(browser, "resume")
        wait_for("resumed", shows(browser, "#verdict", "running"))
        act(browser, "promote")
        wait_for("completed, live", shows(browser, "#verdict", "completed"), timeout=120)
        assert count(browser, ".steps .step-done") == 2
        assert browser.execute_script("return window.notReloaded") is True
        browser.save_screenshot(str(shots / "rollout.png"))
    assert agent.wait_rollout(rollout)["status"] == "completed"

    # Back to v1 from the overview: the engine's rollback, its result, the page following it.
    browser.get(base_url(browser.current_url) + "/")
    wait_for("v2 active", lambda: text_of(browser, "#active-release") == "v2")
    act(browser, "rollback")
    wait_for("v1 active again, live", lambda: text_of(browser, "#active-release") == "v1")
    back = agent.status()["rollout"] or agent.call("GET", "/v1/rollouts?limit=1")[0]
    assert back["rollback"] is True

    browser.get(base_url(browser.current_url) + "/history")
    wait_for("history", shows(browser, f'tr[data-rollout="{rollout}"]', "completed"))
    browser.save_screenshot(str(shots / "history.png"))
    browser.get(base_url(browser.current_url) + "/flags")
    wait_for("flags page", shows(browser, "main h1", "Flags"))
    browser.get(base_url(browser.current_url) + "/migrations")
    wait_for("migrations page", shows(browser, "main", "no [migrations]"))


def logged_in(agent: AgentProcess, browser: Any, path: str) -> str:
    """Log the browser in and open ``path``; the dashboard's base URL."""
    link = login_link(agent)
    browser.get(link)
    wait_for("the overview", lambda: text_of(browser, "#active-release"))
    base = base_url(link)
    browser.get(base + path)
    wait_for("the live stream", lambda: text_of(browser, "#live") == "live")
    browser.execute_script("window.notReloaded = true")
    return base


def test_a_failing_canary_shows_why_it_rolled_back(
    project: Project, agent: AgentProcess, browser: Any, shots: Path
) -> None:
    canary_project(project)
    agent.start()
    first_deploy(agent)
    with load(project, rps=60):
        rollout = agent.deploy("v2", ERROR_RATE="0.3")["id"]
        logged_in(agent, browser, f"/rollouts/{rollout}")
        wait_for("rolled back, live", shows(browser, "#verdict", "rolled back"), timeout=120)
    verdict = text_of(browser, "#verdict")
    stored = agent.wait_rollout(rollout)
    assert stored["status"] == "rolled_back"
    assert stored["reason"] in verdict  # the engine's own reason, word for word
    wait_for("a failed check", shows(browser, "#analysis", "fail"))
    errors = browser.execute_script(
        "return [...document.querySelectorAll('svg.chart')][1]"
        ".querySelector('path[data-release=v2]') !== null"
    )
    assert errors is True  # the error-rate chart has a line for the canary
    assert browser.execute_script("return window.notReloaded") is True
    browser.save_screenshot(str(shots / "rollout-rolled-back.png"))


def test_flags_and_guarded_rollouts_live(
    project: Project, agent: AgentProcess, browser: Any, shots: Path
) -> None:
    canary_project(project)
    agent.start()
    agent.call("POST", "/v1/flags", {"name": "new-checkout", "percent": 0})
    agent.call("POST", "/v1/flags/new-checkout/disable")
    logged_in(agent, browser, "/flags")
    row = 'tr[data-flag="new-checkout"]'
    wait_for("the flag, off", shows(browser, row, "off"))
    assert "flexibleRollout" in text_of(browser, row)
    body = {"steps": [10, 50, 100], "every": "10m"}
    agent.call("POST", "/v1/flags/new-checkout/rollout", body)
    wait_for("the guarded rollout, live", shows(browser, row, "10% of 10 → 50 → 100%"))
    assert "running" in text_of(browser, row)
    assert " on " in f" {text_of(browser, row)} "  # a guarded rollout turns the flag on
    browser.save_screenshot(str(shots / "flags.png"))
    agent.call("POST", "/v1/flags/new-checkout/rollout", {"stop": True})
    wait_for("the stop, live", shows(browser, row, "stopped by hand"))
    assert browser.execute_script("return window.notReloaded") is True


def test_migrations_show_phases_and_backfill_progress(
    project: Project, agent: AgentProcess, browser: Any, shots: Path, pg_url: str
) -> None:
    project.write_config(extra='\n[dashboard]\nlisten = "127.0.0.1:0"\n')
    folder = migrations_project(project, pg_url, rows=30_000)
    start = ["migrate", "start", "--dir", str(folder), "--database-url", pg_url, "--json"]
    child = cli_process(project, *start, "--pause", "100ms")  # ~6 s for all 30,000 rows
    try:
        wait_for("backfill progress", lambda: backfill_rows_done(pg_url) >= 2000)
    finally:
        child.kill()  # interrupted: the backfill stays "running" with its progress saved
        child.wait()
    agent.start(env={"DASHBOARD_TEST_DB": pg_url})
    logged_in(agent, browser, "/migrations")
    fill = 'tr[data-migration="0002_fill.sql"]'
    wait_for("the running backfill", shows(browser, fill, "running"))
    assert "/ ~30,000" in text_of(browser, fill)
    assert "applied" in text_of(browser, 'tr[data-migration="0001_add.sql"]')
    assert "expand" in text_of(browser, 'tr[data-migration="0001_add.sql"]')
    assert "pending" in text_of(browser, 'tr[data-migration="0003_drop.sql"]')
    assert "contract" in text_of(browser, 'tr[data-migration="0003_drop.sql"]')
    browser.save_screenshot(str(shots / "migrations.png"))
    project.cli(*start, check=True)  # resumes the backfill and finishes it
    wait_for("the backfill applied, live", shows(browser, fill, "applied"))
    assert "30,000" in text_of(browser, fill)
    assert browser.execute_script("return window.notReloaded") is True


def test_a_degraded_agent_says_why_and_heals_live(
    project: Project, agent: AgentProcess, browser: Any, shots: Path
) -> None:
    """The router's port is taken at start: the agent runs degraded, and the overview says
    so with the reason; once the port is free the router comes up and the page heals."""
    canary_project(project)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", project.port))
        blocker.listen()
        agent.start(env={"NONSTOP_ROUTER_WAIT": "2"})
        logged_in(agent, browser, "/")
        wait_for("the degraded status", shows(browser, ".degraded", "degraded:"))
        assert str(project.port) in text_of(browser, ".degraded")
        browser.save_screenshot(str(shots / "degraded.png"))
    wait_for("healed, live", shows(browser, "main", "healthy"), timeout=90)
    assert count(browser, ".degraded") == 0
    assert browser.execute_script("return window.notReloaded") is True


def test_an_agent_restart_logs_the_page_out(
    project: Project, agent: AgentProcess, browser: Any
) -> None:
    """Sessions live in the agent's memory: after a restart the open page shows how to log in
    again instead of reconnecting forever."""
    project.write_config(extra=f'\n[dashboard]\nlisten = "127.0.0.1:{free_port()}"\n')
    agent.start()
    logged_in(agent, browser, "/")
    agent.kill9()
    agent.start()
    wait_for("the log-in page", lambda: "Not logged in" in browser.page_source, timeout=90)
