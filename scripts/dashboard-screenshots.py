#!/usr/bin/env python3
"""Regenerate docs/img/dashboard-*.png: a real agent, router and canary under load, seen by
Debian's headless Chromium (the same scenario as tests/dashboard/test_browser.py).

    .venv/bin/python scripts/dashboard-screenshots.py [OUT_DIR]    # default docs/img
"""

from __future__ import annotations

import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from dashboard.scenario import (  # noqa: E402
    base_url,
    browser_paths,
    canary_project,
    login_link,
    rollout_phase,
    start_browser,
    wait_for,
)
from e2e.harness import AgentProcess, Project, free_port  # noqa: E402
from e2e.test_bluegreen import first_deploy, load  # noqa: E402


def main(out: Path) -> int:
    found = browser_paths()
    if found is None:
        print("chromium and chromium-driver are needed (scripts/install-system-deps.sh)")
        return 1
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "shop"
        root.mkdir()
        app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
        (root / "app.py").write_text(app)
        project = Project(root, free_port())
        canary_project(project)
        agent = AgentProcess(project)
        browser = None
        try:
            agent.start()
            browser = start_browser(Path(tmp) / "profile", *found)
            shoot(agent, project, browser, out)
        finally:
            if browser is not None:
                browser.quit()
            agent.cleanup()
    print(f"screenshots written to {out}")
    return 0


def shoot(agent: AgentProcess, project: Project, browser: Any, out: Path) -> None:
    from selenium.webdriver.common.by import By

    def page(path: str, ready: str) -> None:
        browser.get(base + path)
        wait_for(ready, lambda: browser.find_elements(By.CSS_SELECTOR, ready))

    browser.set_window_size(1280, 1500)  # whole pages, charts and analysis tables included
    first_deploy(agent)
    agent.call("POST", "/v1/flags", {"name": "new-checkout", "percent": 10})
    agent.call("POST", "/v1/flags", {"name": "dark-mode", "percent": 100})
    guarded = {"steps": [5, 25, 50, 100], "every": "10m"}
    agent.call("POST", "/v1/flags/new-checkout/rollout", guarded)
    link = login_link(agent)
    base = base_url(link)
    browser.get(link)
    with load(project, rps=60):
        rollout = agent.deploy("v2")["id"]
        wait_for("step 1", lambda: rollout_phase(agent) == ("step", 0), timeout=90)
        wait_for("traffic", lambda: _seconds_in_step(agent) >= 12, timeout=60)
        page("/", "#rollout-summary")
        browser.save_screenshot(str(out / "dashboard-overview.png"))
        page(f"/rollouts/{rollout}", "svg.chart path")
        browser.save_screenshot(str(out / "dashboard-rollout.png"))
        agent.call("POST", "/v1/command", {"command": "promote"})
        agent.wait_rollout(rollout, timeout=120)
        bad = agent.deploy("v3", ERROR_RATE="0.3")["id"]
        agent.wait_rollout(bad, timeout=120)
        page(f"/rollouts/{bad}", "svg.chart path")
        wait_for(
            "the verdict", lambda: "rolled back" in browser.find_element(By.ID, "verdict").text
        )
        browser.save_screenshot(str(out / "dashboard-rolled-back.png"))
    page("/history", "tr[data-rollout]")
    browser.save_screenshot(str(out / "dashboard-history.png"))
    page("/flags", "tr[data-flag]")
    browser.save_screenshot(str(out / "dashboard-flags.png"))


def _seconds_in_step(agent: AgentProcess) -> float:
    rollout = agent.status()["rollout"]
    if not rollout:
        return 0.0
    data = rollout["state"]["data"]
    return time.time() - float(data.get("step_started_at") or time.time())


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "img"))
