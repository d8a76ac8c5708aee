"""WebSockets through deploys, end to end: real agent, real router (Caddy, HAProxy), the sample
app's /ws, and 30 aiohttp clients that reconnect on close (nonstop.loadgen.websockets).

What must hold (decision 0460): a routing change never closes a connection to an instance that
keeps serving; a retiring instance's clients are closed by the app itself (1001 and a reconnect
hint), never abruptly; only a killed instance's clients see an abrupt end; and every client ends
on the new release. Conditions are waited for with generous deadlines, never timed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from e2e.harness import AgentProcess, Project
from e2e.test_bluegreen import first_deploy
from nonstop.loadgen.websockets import Connection, WebSocketHolder, WebSocketReport
from nonstop_testing import require_binary

pytestmark = pytest.mark.slow

T = TypeVar("T")
CLIENTS = 30
ROLLING = """
[strategy.rolling]
max_surge = 1
max_unavailable = 0
"""
CANARY = """
[strategy.canary]
steps = [{ weight = 50, pause = "1s" }]
"""


class Holder:
    """A WebSocketHolder on its own event loop thread (the agent client is synchronous)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.holder = WebSocketHolder(url, CLIENTS)
        self.run(self.holder.start())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def all_on(self, release: str, timeout: float = 60) -> bool:
        return self.run(self.holder.wait_all_on({release}, timeout))

    def closed_since(self, mark: int) -> list[Connection]:
        """Connections opened before ``mark`` (an index in opening order) that are closed now."""
        history = sorted(
            (c for state in self.holder.clients for c in state.history), key=lambda c: c.opened
        )
        return [c for c in history[:mark] if c.closed is not None]

    def opened(self) -> int:
        return sum(len(state.history) for state in self.holder.clients)

    def stop(self, died: set[str]) -> WebSocketReport:
        try:
            return self.run(self.holder.stop(died))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@contextmanager
def holding(project: Project) -> Iterator[Holder]:
    holder = Holder(f"ws://127.0.0.1:{project.port}/ws")
    try:
        yield holder
    finally:
        if not holder.loop.is_closed():
            holder.stop(set())


def configure(project: Project, router: str, strategy: str) -> None:
    if router == "haproxy":
        require_binary("haproxy", "/usr/sbin/haproxy")
    project.write_config(extra=CANARY if strategy == "canary" else ROLLING)
    text = (project.root / "nonstop.toml").read_text()
    text = text.replace('kind = "bluegreen"', f'kind = "{strategy}"')
    text = text.replace(f'[router]\nkind = "{project.router}"\n', f'[router]\nkind = "{router}"\n')
    text = text.replace('keep_previous = "120s"', 'keep_previous = "0s"')
    (project.root / "nonstop.toml").write_text(text)


def deploy(agent: AgentProcess, release: str) -> None:
    done = agent.wait_rollout(agent.deploy(release)["id"], timeout=120)
    assert done["status"] == "completed", (done["status"], done.get("reason"))


def instances(agent: AgentProcess, release: str) -> list[dict[str, Any]]:
    return [i for i in agent.status()["instances"] if i["release"] == release]


def assert_closed_gracefully_only_on(closed: list[Connection], retired: set[str]) -> None:
    """Every closed connection was on a retired instance and ended with the app's 1001."""
    on_survivors = [c for c in closed if c.instance not in retired]
    assert on_survivors == [], f"connections to instances that stayed were closed: {on_survivors}"
    abrupt = [c for c in closed if c.abrupt or c.code != 1001]
    assert abrupt == [], f"not closed with the app's 1001: {abrupt}"


@pytest.mark.parametrize("router", ["caddy", "haproxy"])
@pytest.mark.parametrize("strategy", ["bluegreen", "rolling", "canary"])
def test_websockets_move_to_the_new_release_without_an_abrupt_close(
    project: Project, agent: AgentProcess, router: str, strategy: str
) -> None:
    configure(project, router, strategy)
    agent.start()
    first_deploy(agent)
    v1 = {i["id"] for i in instances(agent, "v1")}
    with holding(project) as ws:
        assert ws.all_on("v1"), ws.holder.snapshot()
        before = ws.opened()
        deploy(agent, "v2")
        # drain_timeout 5 s, the app's reconnect window 1 s: a minute is generous.
        assert ws.all_on("v2"), ws.holder.snapshot()
        assert_closed_gracefully_only_on(ws.closed_since(before), retired=v1)
        # Rolling: a client closed by the first v1 instance may land on another v1 instance
        # still in rotation and move again when that one retires; every close was still a v1's.
        report = ws.stop(set())
    assert report.abrupt == [], report.to_dict()
    assert report.connect_failures == {}, report.to_dict()
    assert report.ended_on == {"v2": CLIENTS}


@pytest.mark.parametrize("router", ["caddy", "haproxy"])
def test_a_killed_instance_closes_only_its_own_websockets(
    project: Project, agent: AgentProcess, router: str
) -> None:
    configure(project, router, "bluegreen")
    agent.start()
    first_deploy(agent)
    with holding(project) as ws:
        assert ws.all_on("v1"), ws.holder.snapshot()
        victim, survivor = instances(agent, "v1")
        before = ws.opened()
        os.kill(victim["pid"], signal.SIGKILL)

        def victim_back() -> bool:
            return any(
                i["id"] == victim["id"] and i["state"] == "ready" and i["restarts"] >= 1
                for i in instances(agent, "v1")
            )

        assert _wait(victim_back), agent.status()["instances"]
        assert ws.all_on("v1")
        closed = ws.closed_since(before)
        assert closed, "the killed instance had clients"
        assert {c.instance for c in closed} == {victim["id"]}, closed
        report = ws.stop({victim["id"]})
    assert report.abrupt == [], report.to_dict()
    assert report.passed, report.verdict()
    assert all(c.instance != survivor["id"] for c in report.closed)


def _wait(predicate: Any, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


WAIT_RESTARTED = """
import sys, time
from nonstop.agent.client import AgentClient
from nonstop.cli.common import project_paths
client, victim = AgentClient(project_paths()), sys.argv[1]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    status = client.call("GET", "/v1/status")
    if any(i["id"] == victim and i["state"] == "ready" and i["restarts"] >= 1
           for i in status["instances"]):
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
"""


def test_verify_excuses_abrupt_closures_on_the_instance_the_agent_saw_die(
    project: Project, agent: AgentProcess
) -> None:
    """``nonstop verify --websockets`` asks the project's agent which instances died: the
    killed instance's abrupt closures pass, and it names it."""
    configure(project, "caddy", "bluegreen")
    agent.start()
    first_deploy(agent)
    victim = instances(agent, "v1")[0]
    kill = f"kill -9 {victim['pid']} && {sys.executable} -c '{WAIT_RESTARTED}' {victim['id']}"
    result = project.cli("verify", "--websockets", "20", "--json", "--", "sh", "-c", kill)
    report = json.loads(result.stdout)["websockets"]
    assert report["died_instances"] == [victim["id"]], (report, result.stderr)
    assert report["abrupt"] == []
    assert report["abrupt_on_died_instances"] >= 1
    assert result.returncode == 0, report["verdict"]


@pytest.mark.parametrize(
    ("router_kind", "restart", "watch"),
    [
        ("caddy", False, "1s"),
        ("haproxy", False, "1s"),
        ("caddy", True, "1s"),
        ("caddy", False, "20s"),
    ],
    ids=["caddy", "haproxy", "caddy-agent-restarted", "caddy-quiet-during-the-watch"],
)
def test_bluegreen_moves_the_clients_of_the_release_kept_warm_and_can_roll_back(
    project: Project, agent: AgentProcess, restart: bool, watch: str
) -> None:
    """Blue-green with the default keep_previous (5 minutes): the previous release stays warm,
    and at its drain deadline gets ``[app] quiet_signal``; the sample app closes its WebSockets
    (1001 and a hint) and keeps serving, so every client is on v2 long before it retires, and
    a rollback to it afterwards is served by the same, still running instances. With the agent
    killed right after the switch, the agent that comes back sends it, once. With a watch
    longer than the drain timeout the step is sent during the watch, and the rollout still
    completes (decision 0510): the router logs each of v1's 30 closed WebSockets as a 101 of
    v1, which were 30 answers of the service while none reached v2 ("no request reached v2
    while the service answered 30": a good release rolled back) until streams stopped counting
    as requests. No HTTP traffic here, so the WebSockets are all the watch could see."""
    project.write_config(watch=watch)
    text = (project.root / "nonstop.toml").read_text()
    text = text.replace('keep_previous = "120s"\n', "")  # the default: 5 minutes
    quiet = 'drain_timeout = "5s"\nquiet_signal = "SIGUSR1"\n'
    text = text.replace('drain_timeout = "5s"\n', quiet)
    (project.root / "nonstop.toml").write_text(text)
    agent.start()
    first_deploy(agent)
    v1 = {i["id"]: i["pid"] for i in instances(agent, "v1")}
    with holding(project) as ws:
        assert ws.all_on("v1"), ws.holder.snapshot()
        before = ws.opened()
        deploy(agent, "v2")
        if restart:
            agent.kill9()
            agent.start()
        # drain_timeout 5 s and a 1 s reconnect window, against 5 minutes of keep_previous.
        assert ws.all_on("v2"), ws.holder.snapshot()
        assert_closed_gracefully_only_on(ws.closed_since(before), retired=set(v1))
        warm = {i["id"]: i["pid"] for i in instances(agent, "v1")}
        assert warm == v1, "the previous release is still warm, the same processes"
        assert "v1" in agent.status()["retire"]
        assert _wait(lambda: _quieted(agent, set(v1))), agent.call("GET", "/v1/events")
        assert sorted(agent.status()["warm_quiet"]["v1"]["sent"]) == sorted(v1)
        if watch != "1s":
            assert _quieted_before_completion(agent, set(v1))
        report = ws.stop(set())
    assert report.abrupt == [], report.to_dict()
    assert report.ended_on == {"v2": CLIENTS}
    done = agent.wait_rollout(agent.call("POST", "/v1/rollback")["id"], timeout=120)
    assert done["status"] == "completed", done
    assert {i["id"]: i["pid"] for i in instances(agent, "v1")} == v1
    with holding(project) as ws:
        assert ws.all_on("v1"), ws.holder.snapshot()
        assert ws.stop(set()).abrupt == []


def _quieted(agent: AgentProcess, ids: set[str]) -> bool:
    """Each of ``ids`` was quieted exactly once (the events say so)."""
    messages = [str(e["message"]) for e in agent.call("GET", "/v1/events")]
    counts = {i: sum(m.startswith(f"quieted {i} ") for m in messages) for i in ids}
    return all(n == 1 for n in counts.values())


def _quieted_before_completion(agent: AgentProcess, ids: set[str]) -> bool:
    """Every one of ``ids`` was quieted before the rollout to v2 (the last one) completed:
    during its watch."""
    events = agent.call("GET", "/v1/events")
    order = [str(e["message"]) for e in sorted(events, key=lambda e: e["id"])]
    done = max(n for n, m in enumerate(order) if m.startswith("rollout") and " completed" in m)
    quiet = [n for n, m in enumerate(order) if any(m.startswith(f"quieted {i} ") for i in ids)]
    return len(quiet) == len(ids) and max(quiet) < done
