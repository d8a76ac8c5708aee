"""Start-up import budget: the commands people run all day load none of the heavy libraries.

`nonstop --help`, `nonstop status` and the other commands that only ask the agent something
must answer at once (docs/benchmarks/cli.md); each library below costs 10-100 ms just to load.
Every case runs the real entry point in a fresh interpreter (against a real agent where it
needs one) and lists the heavy modules in sys.modules at exit. This checks what is imported,
deterministically; the timings themselves are measured by benchmarks/bench_cli.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from e2e.harness import AgentProcess, Project, free_port
from nonstop.agent.client import AgentClient
from nonstop.config import load_config

HEAVY = (
    "aiohttp",
    "asyncio",
    "hdrh",
    "http.client",
    "psycopg",
    "pglast",
    "pydantic",
    "rich",
    "ssl",
)
"""Top-level packages (or modules) no fast path may import."""

PROBE = """
import atexit, sys
HEAVY = {heavy!r}
def report():
    loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    sys.stderr.write("\\nloaded-heavy:" + ",".join(loaded) + "\\n")
atexit.register(report)
sys.argv = ["nonstop", *sys.argv[1:]]
from nonstop.cli.main import main
main()
"""


def run(
    args: list[str], cwd: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``nonstop ARGS`` in a fresh interpreter: its result and the heavy modules it loaded."""
    clean = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    marker = done.stderr.rpartition("loaded-heavy:")[2].strip()
    return done, set(filter(None, marker.split(",")))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A project with its agent up and one release deployed (history and events not empty)."""
    root = tmp_path_factory.mktemp("budget") / "shop"
    root.mkdir()
    app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
    (root / "app.py").write_text(app)
    project = Project(root, free_port())
    project.write_config(
        start_period="5s", extra=f'\n[agent]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    agent = AgentProcess(project)
    try:
        agent.start()
        row = agent.deploy("v1")
        assert agent.wait_rollout(row["id"])["status"] == "completed"
        yield project
    finally:
        agent.cleanup()


@pytest.mark.parametrize(
    "args",
    [["--help"], ["-h"], [], ["--version"], ["migrate", "--help"], ["status", "--help"]],
    ids=" ".join,
)
def test_help_loads_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    done, heavy = run(args, tmp_path)
    assert done.returncode in (0, 2), done.stderr  # bare `nonstop`: usage, exit 2 as before
    assert "Usage: nonstop" in done.stdout + done.stderr or "nonstop, version" in done.stdout
    assert heavy == set()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["status"], 0),
        (["status", "--json"], 0),
        (["history"], 0),
        (["history", "--json"], 0),
        (["events"], 0),
        (["events", "--json"], 0),
        (["logs", "-n", "1"], 0),
        (["promote"], 1),  # nothing in progress: the agent's 409, exit 1
        (["pause", "--json"], 1),
        (["rollback", "--no-wait"], 1),  # one release only: nothing to roll back to
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_agent_commands_load_nothing_heavy(running: Project, args: list[str], code: int) -> None:
    done, heavy = run(args, running.root, NONSTOP_PROJECT=str(running.root))
    assert done.returncode == code, done.stdout + done.stderr
    assert heavy == set()
    if "--json" in args and code == 0:
        json.loads(done.stdout.splitlines()[0] if args[0] == "events" else done.stdout)


def test_status_without_an_agent_loads_nothing_heavy(tmp_path: Path) -> None:
    (tmp_path / "nonstop.toml").write_text("")
    done, heavy = run(["status"], tmp_path)
    assert done.returncode == 1
    assert "no agent is running" in done.stderr
    assert heavy == set()


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """The check can fail: a command that loads the config (pydantic) is reported."""
    done, heavy = run(["deploy", "v1"], tmp_path)  # no nonstop.toml: exit 2 after loading config
    assert done.returncode == 2, done.stderr
    assert "pydantic" in heavy


def test_the_light_client_speaks_to_the_agent_on_both_listeners(running: Project) -> None:
    """The same answers over the unix socket and over `[agent] listen` (decision 0352)."""
    host, _, port = load_config(running.paths.config).agent.listen.rpartition(":")
    unix = AgentClient(running.paths).call("GET", "/v1/rollouts?limit=5")
    tcp = AgentClient(running.paths, tcp=(host, int(port))).call("GET", "/v1/rollouts?limit=5")
    assert unix == tcp
    assert [row["candidate"] for row in tcp] == ["v1"]
