"""Process roles end to end: a worker role beside the sample app, through blue-green, rollback
and rolling deploys, with a real agent, real Caddy and real processes.

Each worker appends to a ledger file as it starts, is quieted and stops; the checks read the
ledger afterwards (which release's workers ran, in what order, how many at once), so nothing
here depends on timing."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import AgentProcess, Project
from nonstop.drivers.runtime import procfs

pytestmark = pytest.mark.slow

WORKER = """\
import os, pathlib, signal, sys, time
ledger = pathlib.Path(os.environ["LEDGER"])
me = os.environ["NONSTOP_INSTANCE"]
def note(what, pid=None):
    with ledger.open("a") as f:
        f.write(f"{what} {me} {pid or os.getpid()} {time.time()}\\n")
def quiet(*_):
    note("quiet")
def stop(*_):
    note("stop")
    sys.exit(0)
signal.signal(signal.SIGTSTP, quiet)
signal.signal(signal.SIGTERM, stop)
if os.environ.get("ESCAPE") == os.environ.get("VERSION"):
    horse = os.fork()
    if horse == 0:
        os.setpgrp()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(0.05)
    note("horse", horse)
note("start")
while True:
    time.sleep(0.05)
"""


def worker_config(ledger: Path, replicas: int = 2, rolling: bool = False) -> str:
    strategy = "\n[strategy.rolling]\nmax_surge = 1\nmax_unavailable = 0\n" if rolling else ""
    return f"""
[processes.worker]
command = "{sys.executable} worker.py"
replicas = {replicas}
stop_timeout = "5s"
quiet_signal = "SIGTSTP"
quiet_grace = "1s"
env = {{ LEDGER = "{ledger}" }}
readiness = {{ kind = "none", min_uptime = "200ms" }}
{strategy}"""


def ledger_times(ledger: Path) -> dict[tuple[str, str], float]:
    """(what, instance) -> when the worker wrote it (the last such line)."""
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return {(w[0], w[1]): float(w[3]) for w in (line.split() for line in lines)}


def ledger_lines(ledger: Path) -> list[tuple[str, str, int]]:
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return [(w[0], w[1], int(w[2])) for w in (line.split() for line in lines)]


def workers(status: dict[str, Any]) -> dict[str, str]:
    return {i["id"]: i["state"] for i in status["instances"] if i["role"] == "worker"}


def most_at_once(ledger: Path) -> int:
    """Most workers taking work at once: from start to quiet (or stop, without one). A quieted
    worker, in its quiet_grace or finishing its jobs, takes none (docs/workers.md)."""
    running, most = set(), 0
    for what, instance, _ in ledger_lines(ledger):
        if what == "start":
            running.add(instance)
        elif what in ("quiet", "stop"):
            running.discard(instance)
        most = max(most, len(running))
    return most


def wait_for(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def deployed(agent: AgentProcess, release: str, **env: str) -> dict[str, Any]:
    row = agent.deploy(release, **env)
    done = agent.wait_rollout(row["id"])
    assert done["status"] == "completed", done
    return done


@pytest.fixture
def ledger(project: Project) -> Path:
    (project.root / "worker.py").write_text(WORKER)
    return project.root.parent / "ledger.txt"


def test_workers_move_with_the_release_and_come_back_on_rollback(
    project: Project, agent: AgentProcess, ledger: Path
) -> None:
    project.write_config(extra=worker_config(ledger))
    agent.start()
    deployed(agent, "v1")
    assert set(workers(agent.status()).values()) == {"ready"}
    assert sorted(workers(agent.status())) == ["v1:worker-1", "v1:worker-2"]

    deployed(agent, "v2")
    wait_for(lambda: sorted(workers(agent.status())) == ["v2:worker-1", "v2:worker-2"], "v2")
    lines = ledger_lines(ledger)
    for old in ("v1:worker-1", "v1:worker-2"):
        mine = [what for what, instance, _ in lines if instance == old]
        assert mine == ["start", "quiet", "stop"], (old, lines)  # quieted, then stopped
        times = ledger_times(ledger)  # quiet_grace 1 s: the stop signal came no sooner
        assert times[("stop", old)] - times[("quiet", old)] >= 1.0, times
    # New workers were started (and ready) before any old one was quieted.
    first_quiet = next(i for i, line in enumerate(lines) if line[0] == "quiet")
    v2_starts = [i for i, line in enumerate(lines) if line[:2] == ("start", "v2:worker-1")]
    assert v2_starts
    assert v2_starts[0] < first_quiet
    web = {i["release"] for i in agent.status()["instances"] if i["role"] == "web"}
    assert web == {"v1", "v2"}  # the old web side stays warm, its workers do not

    row = agent.call("POST", "/v1/rollback", {})
    assert agent.wait_rollout(row["id"])["status"] == "completed"
    wait_for(lambda: {i.split(":")[0] for i in workers(agent.status())} == {"v1"}, "v1 back")
    assert most_at_once(ledger) <= 4
    events = " ".join(e["message"] for e in agent.call("GET", "/v1/events?limit=1000"))
    assert "quieted v1:worker-1 (SIGTSTP)" in events


def test_rolling_moves_workers_within_the_surge_budget(
    project: Project, agent: AgentProcess, ledger: Path
) -> None:
    project.write_config(extra=worker_config(ledger, replicas=3, rolling=True))
    agent.start()
    deployed(agent, "v1")
    text = (
        (project.root / "nonstop.toml")
        .read_text()
        .replace('kind = "bluegreen"', 'kind = "rolling"')
    )
    (project.root / "nonstop.toml").write_text(text)
    deployed(agent, "v2")
    wait_for(lambda: {i.split(":")[0] for i in workers(agent.status())} == {"v2"}, "v2 only")
    starts = [line for line in ledger_lines(ledger) if line[0] == "start"]
    assert len(starts) == 6
    assert most_at_once(ledger) <= 4  # 3 replicas + max_surge 1


def test_a_child_that_left_the_group_is_killed_at_the_deadline_and_reported(
    project: Project, agent: AgentProcess, ledger: Path
) -> None:
    project.write_config(extra=worker_config(ledger, replicas=1))
    agent.start()
    deployed(agent, "v1", ESCAPE="v1")
    horses = [pid for what, _, pid in ledger_lines(ledger) if what == "horse"]
    assert len(horses) == 1
    horse = horses[0]
    assert procfs.read_stat(horse) is not None
    deployed(agent, "v2")
    wait_for(lambda: sorted(workers(agent.status())) == ["v2:worker-1"], "v2 worker only")
    stat = procfs.read_stat(horse)
    assert stat is None or stat.gone
    events = [e["message"] for e in agent.call("GET", "/v1/events?limit=1000")]
    assert any(
        "v1:worker-1: killed 1 process(es) that had left its process group" in e and str(horse) in e
        for e in events
    ), events


def test_a_restarted_agent_adopts_workers_and_leaves_their_escaped_children_alone(
    project: Project, agent: AgentProcess, ledger: Path
) -> None:
    """The stray scan at start-up kills processes of this state dir that belong to no live
    instance; a live worker's child that left its group is not one of them."""
    project.write_config(extra=worker_config(ledger, replicas=1))
    agent.start()
    deployed(agent, "v1", ESCAPE="v1")
    before = {i["id"]: i["pid"] for i in agent.status()["instances"]}
    horse = next(pid for what, _, pid in ledger_lines(ledger) if what == "horse")
    agent.kill9()
    agent.start()
    after = {i["id"]: i["pid"] for i in agent.status()["instances"]}
    assert after == before  # adopted, web and worker alike
    roles = {i["id"]: i["role"] for i in agent.status()["instances"]}
    assert roles["v1:worker-1"] == "worker"
    stat = procfs.read_stat(horse)
    assert stat is not None
    assert not stat.gone
    events = [e["message"] for e in agent.call("GET", "/v1/events?limit=1000")]
    assert not any("stray" in e for e in events), events


HEARTBEAT = """\
import os, pathlib, time
beat = pathlib.Path("beat-" + os.environ["NONSTOP_INSTANCE"].replace(":", "_"))
while True:
    beat.touch()
    time.sleep(0.1)
"""
FRESH = """\
import os, pathlib, sys, time
beat = pathlib.Path("beat-" + os.environ["NONSTOP_INSTANCE"].replace(":", "_"))
sys.exit(0 if beat.exists() and time.time() - beat.stat().st_mtime < 1.5 else 1)
"""


def test_a_sigstopped_worker_is_detected_and_replaced(
    project: Project, agent: AgentProcess
) -> None:
    """A hung worker: SIGSTOP to the main process. With an ``exec`` probe that checks a
    heartbeat the worker writes, the beat goes stale; with ``none``, the process is seen
    stopped (state T). Either way liveness fails, and supervision replaces it (SIGKILL at its
    stop deadline: a stopped process cannot act on SIGTERM). A deadlocked worker that is not
    stopped would pass ``none``: docs/workers.md."""
    (project.root / "beat.py").write_text(HEARTBEAT)
    (project.root / "fresh.py").write_text(FRESH)
    project.write_config(
        extra=f"""
[processes.beat]
command = "{sys.executable} beat.py"
stop_timeout = "1s"
readiness = {{ kind = "exec", command = "{sys.executable} fresh.py" }}

[processes.plain]
command = "{sys.executable} beat.py"
stop_timeout = "1s"
"""
    )
    text = (project.root / "nonstop.toml").read_text()
    text = text.replace('interval = "100ms"\n', 'interval = "100ms"\nliveness_interval = "200ms"\n')
    (project.root / "nonstop.toml").write_text(text)
    agent.start()
    deployed(agent, "v1")
    before = {i["id"]: i for i in agent.status()["instances"] if i["role"] in ("beat", "plain")}
    assert sorted(before) == ["v1:beat-1", "v1:plain-1"]
    assert [before[i]["check"] for i in sorted(before)] == ["exec", "none"]  # status says it
    for instance in before.values():
        os.kill(instance["pid"], signal.SIGSTOP)

    def replaced() -> bool:
        now = {i["id"]: i for i in agent.status()["instances"]}
        return all(
            now[i]["restarts"] >= 1 and now[i]["state"] == "ready" and now[i]["pid"] != old["pid"]
            for i, old in before.items()
        )

    try:
        wait_for(replaced, "both stopped workers replaced", timeout=60)
    finally:
        for instance in before.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(instance["pid"], signal.SIGCONT)
    events = " ".join(e["message"] for e in agent.call("GET", "/v1/events?limit=1000"))
    assert "its main process is stopped" in events, events
