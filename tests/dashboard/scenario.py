"""A real project under a real agent and router with the dashboard on, for the browser tests
and for scripts/dashboard-screenshots.py: a canary whose first step waits for `promote`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.harness import AgentProcess, Project

CANARY = """
[strategy.canary]
steps = [{ weight = 25, pause = {} }, { weight = 50, pause = "2s" }]
sequential = true

[[strategy.canary.analysis]]
metric = "error_rate"
max = 0.05
min_samples = 20
interval = "1s"

[dashboard]
listen = "127.0.0.1:0"
"""


def canary_project(project: Project) -> None:
    project.write_config(extra=CANARY)
    path = project.root / "nonstop.toml"
    path.write_text(path.read_text().replace('kind = "bluegreen"', 'kind = "canary"'))


def login_link(agent: AgentProcess) -> str:
    link: dict[str, Any] = agent.call("POST", "/v1/dashboard/login")
    return str(link["url"])


def base_url(link: str) -> str:
    match = re.match(r"^(https?://[^/]+)/", link)
    assert match, link
    return match[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def rollout_phase(agent: AgentProcess) -> tuple[str, int] | None:
    rollout = agent.status()["rollout"]
    return (rollout["phase"], rollout["step"]) if rollout else None


def browser_paths() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def start_browser(user_data: Path, chromium: str, driver: str) -> Any:
    """Debian's Chromium, headless, driven through Debian's chromedriver (same version)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={user_data}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=driver, log_output=subprocess.DEVNULL)
    return webdriver.Chrome(options=options, service=service)


def dashboard_cli(
    project: Project, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NONSTOP_PROJECT": str(project.root), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "nonstop.cli", "dashboard", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def loads(text: str) -> Any:
    return json.loads(text)
