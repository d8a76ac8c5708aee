"""A real project under a real agent and router with the dashboard on, for the browser tests
and for scripts/dashboard-screenshots.py: a canary whose first step waits for `promote`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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


EXPAND = """-- nonstop: phase=expand
ALTER TABLE users ADD COLUMN email_lower text;
"""
BACKFILL = """-- nonstop: phase=backfill table=users key=id batch=500
UPDATE users SET email_lower = lower(email) WHERE id BETWEEN :lo AND :hi;
"""
CONTRACT = """ALTER TABLE users DROP COLUMN email;
"""


def migrations_project(project: Project, url: str, rows: int) -> Path:
    """[migrations] with an expand (applied), a backfill over ``rows`` rows and a contract."""
    import psycopg

    folder = project.root / "migrations"
    folder.mkdir()
    for name, text in (("0001_add.sql", EXPAND), ("0002_fill.sql", BACKFILL)):
        (folder / name).write_text(text)
    (folder / "0003_drop.sql").write_text("-- nonstop: phase=contract\n" + CONTRACT)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL)")
        conn.execute(
            "INSERT INTO users (email) SELECT 'U' || g || '@X.ORG' FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE users")
    extra = '\n[migrations]\ndir = "migrations"\ndatabase_url = "$DASHBOARD_TEST_DB"\n'
    path = project.root / "nonstop.toml"
    path.write_text(path.read_text() + extra)
    return folder


def backfill_rows_done(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('nonstop.backfill_progress')").fetchone()
        if not exists or exists[0] is None:
            return 0
        row = conn.execute("SELECT coalesce(sum(rows_done), 0) FROM nonstop.backfill_progress")
        found = row.fetchone()
    return int(found[0]) if found else 0


def cli_process(project: Project, *args: str) -> subprocess.Popen[bytes]:
    """`nonstop ARGS` running in the background (the caller stops it)."""
    env = {**os.environ, "NONSTOP_PROJECT": str(project.root)}
    return subprocess.Popen(
        [sys.executable, "-m", "nonstop.cli", *args],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
