"""Invariant 2 end to end: an old instance stops only after traffic moved off it and its
in-flight requests and streams finished (or hit the drain deadline)."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from e2e.harness import ROUTER_KINDS, AgentProcess, Project
from e2e.test_bluegreen import first_deploy

pytestmark = pytest.mark.slow


def wait_until(predicate: object, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_previous_release_is_retired_after_keep_previous(
    project: Project, agent: AgentProcess
) -> None:
    text = (
        (project.root / "nonstop.toml")
        .read_text()
        .replace('keep_previous = "120s"', 'keep_previous = "1s"')
    )
    (project.root / "nonstop.toml").write_text(text)
    agent.start()
    first_deploy(agent)
    v1_pids = [i["pid"] for i in agent.status()["instances"]]
    assert agent.wait_rollout(agent.deploy("v2")["id"])["status"] == "completed"

    def v1_gone() -> bool:
        return all(i["release"] != "v1" for i in agent.status()["instances"])

    assert wait_until(v1_gone), agent.status()["instances"]
    assert all(not _alive(pid) for pid in v1_pids)
    events = [e["message"] for e in agent.call("GET", "/v1/events")]
    assert any("retiring v1: keep_previous elapsed" in e for e in events), events


@pytest.mark.parametrize("router_kind", ROUTER_KINDS)
def test_in_flight_request_and_stream_finish_before_the_old_instance_stops(
    project: Project, agent: AgentProcess
) -> None:
    """A 3 s request and a 3 s stream that started on v1 complete after v1 was retired."""
    text = (project.root / "nonstop.toml").read_text()
    text = text.replace('keep_previous = "120s"', 'keep_previous = "0s"')
    text = text.replace("replicas = 2", "replicas = 1").replace(
        'duration = "1s"', 'duration = "0s"'
    )
    (project.root / "nonstop.toml").write_text(text)
    # The app dies on SIGTERM: if it were stopped early, the requests would be cut.
    text = text.replace("app.py --port {port}", "app.py --port {port} --no-graceful")
    (project.root / "nonstop.toml").write_text(text)
    agent.start()
    first_deploy(agent)
    results: dict[str, object] = {}

    def fetch(name: str, path: str) -> None:
        try:
            with urllib.request.urlopen(project.url.rstrip("/") + path, timeout=20) as response:
                results[name] = (response.status, response.read())
        except OSError as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=fetch, args=("slow", "/slow?ms=3000")),
        threading.Thread(target=fetch, args=("stream", "/stream?seconds=3&interval=0.5")),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert agent.wait_rollout(agent.deploy("v2")["id"])["status"] == "completed"

    def v1_draining() -> bool:
        v1 = [i for i in agent.status()["instances"] if i["release"] == "v1"]
        return bool(v1) and v1[0]["state"] == "draining"

    assert wait_until(v1_draining, 5), "v1 drains while its requests still run"
    assert "slow" not in results
    for thread in threads:
        thread.join(20)
    slow, stream = results["slow"], results["stream"]
    assert isinstance(slow, tuple), slow
    assert slow[0] == 200
    assert isinstance(stream, tuple), stream
    assert stream[0] == 200
    assert stream[1].count(b"\n") >= 6, stream[1]  # every line of the 3 s stream arrived

    def v1_gone() -> bool:
        return all(i["release"] != "v1" for i in agent.status()["instances"])

    assert wait_until(v1_gone)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
