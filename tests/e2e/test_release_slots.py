"""Release slots end to end (router.release_slots, decision 0581): a request stamped
``X-Nonstop-Release: <release>`` is answered by that release - the candidate held ready, or the
previous release kept warm - and every other request by the weighted table; an instance leaves
its slot before it drains, and stops only once the requests its slot took have finished.

A real agent, a real HAProxy, real sample-app processes. The app runs ``--no-graceful``: a
stop signal kills it at once, so an instance stopped too early would cut the pinned request."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from e2e.harness import AgentProcess, Project
from e2e.test_bluegreen import first_deploy, wait_phase

pytestmark = pytest.mark.slow

STAMP = "X-Nonstop-Release"


@pytest.fixture
def router_kind() -> str:
    return "haproxy"


def configure(project: Project, *, keep_previous: str) -> None:
    """One instance per release, held for `nonstop promote`, no watch, a long drain deadline
    (20 s, far beyond the pinned requests) and release slots on."""
    project.write_config(bluegreen="auto_promote = false", watch="0s")
    path = project.root / "nonstop.toml"
    text = path.read_text()
    text = text.replace("replicas = 2", "replicas = 1")
    text = text.replace('drain_timeout = "5s"', 'drain_timeout = "20s"')
    text = text.replace('keep_previous = "120s"', f'keep_previous = "{keep_previous}"')
    text = text.replace('kind = "haproxy"', 'kind = "haproxy"\nrelease_slots = true')
    text = text.replace("app.py --port {port}", "app.py --port {port} --no-graceful")
    path.write_text(text)


def wait_until(what: str, predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def get(project: Project, path: str = "/", release: str | None = None) -> tuple[int, str]:
    """Status and the ``X-Release`` of the instance that answered."""
    headers = {STAMP: release} if release else {}
    request = urllib.request.Request(project.url.rstrip("/") + path, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return response.status, response.headers["X-Release"]


def slots_of(agent: AgentProcess) -> dict[str, list[str]]:
    return agent.status()["slots"] or {}


def instance(agent: AgentProcess, release: str) -> dict[str, Any] | None:
    found = [i for i in agent.status()["instances"] if i["release"] == release]
    return found[0] if found else None


def in_flight(address: str) -> int:
    """The instance's own count of requests it is answering (the sample app's /metrics)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^http_requests_in_flight\{[^}]*\} (\d+)$", text, re.MULTILINE)
    assert match, text
    return int(match.group(1))


def answering(address: str) -> bool:
    """The instance answers a request: one in flight at three reads 50 ms apart (a health
    check, also counted, lasts about a millisecond; the pinned request lasts seconds)."""
    for _ in range(3):
        if in_flight(address) < 1:
            return False
        time.sleep(0.05)
    return True


class Pinned:
    """A slow request stamped with a release, on its own thread."""

    def __init__(self, project: Project, release: str, ms: int) -> None:
        self.result: tuple[int, str] | Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(project, release, ms))
        self.thread.start()

    def _run(self, project: Project, release: str, ms: int) -> None:
        try:
            self.result = get(project, f"/slow?ms={ms}", release)
        except Exception as exc:
            self.result = exc

    def join(self) -> tuple[int, str] | Exception | None:
        self.thread.join(60)
        return self.result


def pin_slow_request(
    project: Project, agent: AgentProcess, release: str, ms: int = 8000
) -> tuple[Pinned, str]:
    """Start a slow request pinned to ``release`` and wait until its instance answers it."""
    live = instance(agent, release)
    assert live is not None, agent.status()["instances"]
    assert live["state"] == "ready", live
    pinned = Pinned(project, release, ms)
    wait_until(f"{release} answers the pinned request", lambda: answering(live["address"]))
    return pinned, live["address"]


def draining(agent: AgentProcess, release: str) -> Callable[[], bool]:
    """Whether ``release``'s instance is draining (for wait_until)."""

    def check() -> bool:
        live = instance(agent, release)
        return live is not None and live["state"] == "draining"

    return check


def test_a_stamped_request_reaches_the_held_candidate_and_an_abort_lets_it_finish(
    project: Project, agent: AgentProcess
) -> None:
    configure(project, keep_previous="120s")
    agent.start()
    first_deploy(agent)
    assert list(slots_of(agent)) == ["v1"]
    rollout = agent.deploy("v2")
    wait_phase(agent, "awaiting_promote")
    wait_until("v2 has a slot", lambda: list(slots_of(agent)) == ["v1", "v2"])

    assert get(project, release="v2") == (200, "v2")  # held at weight 0, served by name
    assert get(project) == (200, "v1")  # no stamp: the table, where v1 has everything
    assert get(project, release="v9") == (200, "v1")  # no slot for v9: the table too
    assert get(project, release="v1") == (200, "v1")

    pinned, _ = pin_slow_request(project, agent, "v2")
    agent.call("POST", "/v1/command", {"command": "abort"})
    assert agent.wait_rollout(rollout["id"])["status"] == "aborted"

    wait_until("v2 drains", draining(agent, "v2"))
    wait_until("v2 leaves its slot", lambda: list(slots_of(agent)) == ["v1"])
    assert pinned.result is None, "the pinned request is still running while v2 drains"
    assert pinned.join() == (200, "v2")
    wait_until("v2 stops", lambda: instance(agent, "v2") is None)
    assert get(project, release="v2") == (200, "v1")  # no v2 left: the table answers


def test_the_kept_warm_release_serves_by_name_until_it_retires_after_its_last_request(
    project: Project, agent: AgentProcess
) -> None:
    configure(project, keep_previous="3s")
    agent.start()
    first_deploy(agent)
    rollout = agent.deploy("v2")
    wait_phase(agent, "awaiting_promote")
    agent.call("POST", "/v1/command", {"command": "promote"})
    assert agent.wait_rollout(rollout["id"])["status"] == "completed"

    # v1 is kept warm for 3 s: out of the table, still served by name.
    pinned, address = pin_slow_request(project, agent, "v1")
    assert get(project) == (200, "v2")
    assert list(slots_of(agent)) == ["v2", "v1"]

    wait_until("v1 retires (keep_previous elapsed)", draining(agent, "v1"))
    wait_until("v1 leaves its slot", lambda: list(slots_of(agent)) == ["v2"])
    assert pinned.result is None, "the pinned request is still running while v1 drains"
    assert answering(address)
    assert pinned.join() == (200, "v1")  # answered by v1, not cut by its stop
    wait_until("v1 stops", lambda: instance(agent, "v1") is None)
    events = [e["message"] for e in agent.call("GET", "/v1/events")]
    assert any("retiring v1: keep_previous elapsed" in e for e in events), events
    assert not any("drain deadline passed" in e for e in events), events
    assert get(project, release="v1") == (200, "v2")


def test_slots_survive_an_agent_restart_and_a_router_restart(
    project: Project, agent: AgentProcess
) -> None:
    """The restarted agent and the revived router route the same slots (a forced sync of the
    table and the slots, as after any restart); the kept-warm v1 still answers by name."""
    configure(project, keep_previous="120s")
    agent.start()
    first_deploy(agent)
    rollout = agent.deploy("v2")
    wait_phase(agent, "awaiting_promote")
    agent.call("POST", "/v1/command", {"command": "promote"})
    assert agent.wait_rollout(rollout["id"])["status"] == "completed"
    wait_until("v1 kept warm in a slot", lambda: list(slots_of(agent)) == ["v2", "v1"])

    agent.kill9()
    agent.start()
    wait_until("the new agent took the slots", lambda: list(slots_of(agent)) == ["v2", "v1"])
    assert (get(project, release="v1"), get(project)) == ((200, "v1"), (200, "v2"))

    before = agent.status()["router"]["pid"]
    os.kill(before, signal.SIGKILL)

    def revived() -> bool:
        router = agent.status()["router"]
        return bool(router["alive"]) and router["pid"] not in (None, before)

    wait_until("the router is revived", revived)
    assert (get(project, release="v1"), get(project)) == ((200, "v1"), (200, "v2"))
    assert list(slots_of(agent)) == ["v2", "v1"]
