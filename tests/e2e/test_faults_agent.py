"""The agent under faults, end to end (real agent, Caddy and processes): a full disk, an agent
restart in the middle of a followed deploy, and requests no handler should ever see.

Invariant 8: no loop of the agent ends on an exception; invariant 9: no process outlives its
instance (nor `nonstop down`)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from e2e.harness import AgentProcess, Project, free_port
from nonstop.drivers.runtime.base import InstanceHandle
from nonstop.drivers.runtime.localref import LocalRef
from nonstop.store import open_store
from nonstop_testing import wait_for

pytestmark = pytest.mark.slow


def instance_processes(state: Path) -> set[int]:
    """Pids whose environment names this state dir and an instance."""
    marker = f"NONSTOP_STATE_DIR={state}\0".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            environ = b"\0" + (entry / "environ").read_bytes() + b"\0"
            if b"\0" + marker in environ and b"\0NONSTOP_INSTANCE=" in environ:
                found.add(int(entry.name))
    return found


def stored_pid(handle: dict[str, object]) -> int:
    """The pid inside a stored handle's opaque reference (the local runtime's)."""
    return LocalRef.of(InstanceHandle.from_dict(handle)).pid


def start_stray(state: Path, instance: str) -> subprocess.Popen[bytes]:
    """A process of this state dir that the store does not know (as one started while the
    store could not write would be)."""
    env = {**os.environ, "NONSTOP_STATE_DIR": str(state), "NONSTOP_INSTANCE": instance}
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], env=env, start_new_session=True
    )


def serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def small_disk(project: Project) -> Iterator[Path]:
    """The project's state dir on its own 40 MB tmpfs (root only)."""
    state = project.paths.state
    state.mkdir()
    if os.geteuid() != 0:
        skip_or_fail("mounting a small tmpfs for the state dir needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "tmpfs", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield state
    finally:
        AgentProcess(project).cleanup()
        subprocess.run(["umount", "-l", str(state)], check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` until a write fails with ENOSPC."""
    filler = folder / "filler"
    failures = []
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 20, 4096, 512):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                failures.append(exc.errno)
    assert failures == [errno.ENOSPC] * 3
    return filler


def test_a_full_disk_degrades_the_agent_and_loses_nothing(
    project: Project, agent: AgentProcess, small_disk: Path
) -> None:
    agent.start()
    assert agent.wait_rollout(agent.deploy("v1")["id"])["status"] == "completed"
    before = agent.status()
    victim = before["instances"][0]
    filler = fill(small_disk)

    # The disk is full: kill an instance (its supervisor restarts it: a write that fails) and
    # the router (its revival must not depend on a rollout tick, nor die on the failed write).
    os.kill(victim["pid"], signal.SIGKILL)
    os.kill(before["router"]["pid"], signal.SIGKILL)
    degraded = wait_for(
        "the agent to report the full store",
        lambda: [p for p in agent.status()["degraded"] if p["what"] == "store"],
    )
    assert "No space left" in degraded[0]["why"] or "full" in degraded[0]["why"], degraded
    text = project.cli("status")
    assert text.returncode == 0, text.stderr
    assert "degraded: the state store cannot write" in text.stdout
    wait_for(
        "the killed instance to be restarted",
        lambda: any(i["restarts"] >= 1 for i in agent.status()["instances"]),
    )

    # Space again: the events kept in memory are written, the router is back, deploys work.
    filler.unlink()
    wait_for("the router to serve again", lambda: serves(project.url), timeout=90)
    wait_for("the degraded status to clear", lambda: not agent.status()["degraded"], timeout=90)

    def store_knows_every_pid() -> bool:
        store = open_store(small_disk)
        try:
            recorded = {row.id: stored_pid(row.handle) for row in store.instances()}
        finally:
            store.close()
        return recorded == {i["id"]: i["pid"] for i in agent.status()["instances"]}

    wait_for("the store to record the restarted instance", store_knows_every_pid)
    messages = [e["message"] for e in agent.call("GET", "/v1/events?limit=10000")]
    assert "router is not answering; restarting it" in messages
    assert any(m.startswith("the state store writes again") for m in messages), messages
    done = agent.wait_rollout(agent.deploy("v2")["id"], timeout=120)
    assert done["status"] == "completed", done
    assert agent.call("GET", f"/v1/rollouts/{done['id']}")["journal"]

    # `down` stops every process of this state dir, recorded or not.
    stray = start_stray(small_disk, "v1-99")
    assert stray.pid in instance_processes(small_disk)
    down = project.cli("down")
    assert down.returncode == 0, down.stderr
    stray.wait(30)
    wait_for("no instance process left", lambda: not instance_processes(small_disk), timeout=30)
    assert agent.wait_exit(30) == 0


def test_deploy_follows_its_rollout_across_an_agent_restart(
    project: Project, agent: AgentProcess
) -> None:
    project.write_config(watch="4s")
    agent.start()
    assert agent.wait_rollout(agent.deploy("v1")["id"])["status"] == "completed"
    env = {**os.environ, "NONSTOP_PROJECT": str(project.root)}
    follower = subprocess.Popen(
        [sys.executable, "-m", "nonstop.cli", "deploy", "v2", "--env", "VERSION=v2"],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        assert follower.stderr is not None
        stderr = follower.stderr
        threading.Thread(target=lambda: [lines.put(x) for x in stderr], daemon=True).start()
        wait_for("the rollout to run", lambda: agent.status()["rollout"])
        agent.kill9()
        stray = start_stray(project.paths.state, "v2-77")

        def said_reconnecting() -> bool:
            with contextlib.suppress(queue.Empty):
                return "agent restarting, reconnecting..." in lines.get(timeout=0.5)
            return False

        wait_for("the CLI to say it reconnects", said_reconnecting)
        agent.start()
        out, _ = follower.communicate(timeout=120)
        assert follower.returncode == 0, out
        assert "v2 deployed" in out
        stray.wait(30)  # start-up stopped the process the store did not know
        history = agent.call("GET", "/v1/rollouts")
        assert [(r["candidate"], r["status"]) for r in history][:1] == [("v2", "completed")]
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()


BAD_REQUESTS: list[tuple[str, str, bytes | None, int, str]] = [
    ("GET", "/v1/rollouts?limit=99999999999999999999", None, 400, "limit: expected an integer"),
    ("GET", "/v1/rollouts?limit=-1", None, 400, "limit"),
    ("GET", "/v1/rollouts?limit=abc", None, 400, "limit"),
    ("GET", "/v1/rollouts/99999999999999999999999", None, 400, "rollout id"),
    ("GET", "/v1/rollouts/12", None, 404, "no rollout 12"),
    ("GET", "/v1/rollouts/-3", None, 400, "rollout id"),
    ("GET", "/v1/events?after=1e9", None, 400, "after"),
    ("GET", "/v1/events?rollout=99999999999999999999", None, 400, "rollout"),
    ("GET", "/v1/events?limit=0", None, 400, "limit"),
    ("GET", "/v1/analysis?rollout=x", None, 400, "rollout"),
    ("GET", "/v1/logs?lines=99999999999", None, 400, "lines"),
    ("GET", "/v1/logs?instance=../token", None, 400, "no instance"),
    ("POST", "/v1/deploy", b"[" * 100_000, 400, "nested"),
    ("POST", "/v1/deploy", b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, 400, "nested"),
    ("POST", "/v1/deploy", b"{not json", 400, "not valid JSON"),
    ("POST", "/v1/deploy", b'{"release": ' + b"9" * 5_001 + b"}", 400, "not valid JSON"),
    ("POST", "/v1/deploy", b'{"release": "v9\\n", "path": "/tmp", "config": {}}', 400, "release"),
    ("POST", "/v1/deploy", b"\xff\xfe", 400, "not valid JSON"),
    ("POST", "/v1/deploy", b"[1, 2]", 400, "must be a JSON object"),
    ("POST", "/v1/deploy", b'{"release": 5}', 400, '"release"'),
    ("POST", "/v1/deploy", b'{"release": "v1", "path": "rel"}', 400, '"path"'),
    ("POST", "/v1/deploy", b'{"release": "v1", "path": "/tmp", "config": 1}', 400, "config"),
    ("POST", "/v1/deploy", b'{"release": "v1", "path": "/tmp", "config": {}}', 400, "app"),
    ("POST", "/v1/deploy", b'{"release": "v1", "path": "/tmp", "env": [1]}', 400, '"env"'),
    ("POST", "/v1/deploy", b'{"x": "' + b"a" * (5 << 20) + b'"}', 413, "Too Large"),
    ("POST", "/v1/command", b'{"command": 5}', 400, '"command"'),
    ("POST", "/v1/command", b'{"command": "launch"}', 400, "unknown command"),
    ("POST", "/v1/shutdown", b'{"stop_instances": "yes"}', 400, "stop_instances"),
    ("POST", "/v1/migrate/contract", b"{}", 400, '"directory"'),
    (
        "POST",
        "/v1/migrate/contract",
        b'{"directory": "/m", "url": "x", "pg_version": -1}',
        400,
        "pg_version",
    ),
    ("GET", "/v1/nothing-here", None, 404, "Not Found"),
    ("PUT", "/v1/status", None, 405, "Not Allowed"),
    ("GET", "/v1/deploy", None, 405, "Not Allowed"),
]


def test_every_malformed_request_gets_a_json_4xx(project: Project, agent: AgentProcess) -> None:
    """Through the unix socket and the loopback TCP listener alike; bad requests change
    nothing (the agent still answers, with its token required on TCP too)."""
    port = free_port()
    project.write_config(extra=f'\n[agent]\nlisten = "127.0.0.1:{port}"\n')
    agent.start()
    token = project.paths.read_token()
    assert token is not None
    failures = asyncio_run_table(project, token, port)
    assert not failures, "\n".join(failures)
    assert agent.status()["degraded"] == []


def asyncio_run_table(project: Project, token: str, port: int) -> list[str]:
    import asyncio

    async def run() -> list[str]:
        failures = []
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        unix = aiohttp.UnixConnector(path=str(project.paths.socket))
        async with (
            aiohttp.ClientSession(connector=unix) as over_unix,
            aiohttp.ClientSession() as over_tcp,
        ):
            for n, (method, path, body, status, text) in enumerate(BAD_REQUESTS):
                session, base = (
                    (over_unix, "http://agent") if n % 2 else (over_tcp, f"http://127.0.0.1:{port}")
                )
                data = io.BytesIO(body) if body is not None else None
                async with session.request(method, base + path, data=data, headers=headers) as r:
                    raw = await r.read()
                try:
                    message = json.loads(raw)["error"]
                except (ValueError, KeyError, TypeError):
                    failures.append(f"{method} {path[:60]}: not a JSON error: {raw[:200]!r}")
                    continue
                if r.status != status or text not in message or "Traceback" in message:
                    failures.append(f"{method} {path[:60]}: {r.status} {message[:200]}")
            async with over_tcp.get(f"http://127.0.0.1:{port}/v1/status") as r:
                if r.status != 401:
                    failures.append(f"TCP without a token: {r.status}")
            async with over_tcp.get(f"http://127.0.0.1:{port}/v1/status", headers=headers) as r:
                if r.status != 200:
                    failures.append(f"TCP with the token: {r.status}")
        return failures

    return asyncio.run(run())


@contextlib.contextmanager
def port_taken(port: int) -> Iterator[None]:
    """A listener on the router's port, once the killed router has let go of it."""
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def bound() -> bool:
            try:
                blocker.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

        wait_for("the router port to be free", bound)
        blocker.listen()
        yield


def test_a_restarted_agent_waits_out_a_router_that_fails_during_recovery(
    project: Project, agent: AgentProcess
) -> None:
    """Restart with the router dead and its port briefly taken: recovery fails, is retried,
    and completes once the port is free; the agent never exits and adopts the same instances."""
    agent.start()
    assert agent.wait_rollout(agent.deploy("v1")["id"])["status"] == "completed"
    before = agent.status()
    agent.kill9()
    os.kill(before["router"]["pid"], signal.SIGKILL)
    with port_taken(project.port):
        agent.start({"NONSTOP_ROUTER_WAIT": "60"}, wait=False)
        wait_for(
            "a failed recovery attempt",
            lambda: "start-up recovery attempt 1 failed" in agent.log_tail() + events_text(project),
        )
    agent.wait_up(timeout=90)
    status = agent.status()
    assert status["degraded"] == []
    assert status["router"]["alive"]
    assert {i["pid"] for i in status["instances"]} == {i["pid"] for i in before["instances"]}
    assert agent.process is not None
    assert agent.process.poll() is None
    wait_for("the router to serve", lambda: serves(project.url))


def events_text(project: Project) -> str:
    store = open_store(project.paths.state)
    try:
        return "\n".join(e["message"] for e in store.events(limit=200))
    finally:
        store.close()


def test_a_dead_router_admin_socket_is_a_reason_people_read(
    project: Project, agent: AgentProcess
) -> None:
    """The router killed and its port taken (it cannot come back), then a deploy: the engine's
    tick and the revival fail, and status and the events say so in words ("router admin socket
    PATH refused the connection"), never an exception's repr."""
    import re

    agent.start()
    assert agent.wait_rollout(agent.deploy("v1")["id"])["status"] == "completed"
    os.kill(agent.status()["router"]["pid"], signal.SIGKILL)
    with port_taken(project.port):
        rollout = agent.deploy("v2")["id"]
        degraded = wait_for(
            "the engine's tick to fail on the router",
            lambda: [p["why"] for p in agent.status()["degraded"] if p["what"] == "engine"],
            timeout=120,
        )
        assert "router admin socket" in degraded[0], degraded
        said = [p["why"] for p in agent.status()["degraded"]] + [events_text(project)]
        reprs = [s for s in said if re.search(r"\w(Error|Exception)\(|ConnectionKey\(", s)]
        assert not reprs, reprs
    wait_for("the router to serve again", lambda: serves(project.url), timeout=120)
    agent.wait_rollout(rollout, timeout=120)


def test_down_without_an_agent_stops_the_leftover_router_and_says_so(
    project: Project, agent: AgentProcess
) -> None:
    """The agent killed with SIGKILL leaves its router and instances serving; `nonstop down`
    finds the router by its pid file (same pid, start time and binary, as adoption checks),
    stops it and the instances, and says what it stopped. A pid file naming another live
    process is not followed."""
    agent.start()
    assert agent.wait_rollout(agent.deploy("v1")["id"])["status"] == "completed"
    router = agent.status()["router"]["pid"]
    agent.kill9()
    assert serves(project.url)  # still routing without its agent
    down = project.cli("down", check=True)
    assert f"stopped the leftover router caddy (pid {router})" in down.stdout, down.stdout
    assert "leftover instance process(es)" in down.stdout, down.stdout
    wait_for("the router to exit", lambda: not Path(f"/proc/{router}").exists())
    assert not instance_processes(project.paths.state)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", project.port)) != 0

    # A pid file that names some other live process (a reused pid): nothing is signalled.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        start = Path(f"/proc/{other.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        pid_file = project.paths.state / "router" / "caddy.pid"
        pid_file.write_text(json.dumps({"pid": other.pid, "start_time": start}))
        again = project.cli("down", check=True)
        assert "nothing to stop" in again.stdout, again.stdout
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


FULL_DISK_CANARY = """
[strategy.canary]
steps = [{ weight = 50, pause = {} }]
sequential = false
[dashboard]
listen = "127.0.0.1:0"

[[notify]]
url = "URL"
retries = 3
backoff = "2s"
max_backoff = "2s"
"""


def test_a_full_state_disk_leaves_the_dashboard_serving_and_notices_going(
    project: Project, agent: AgentProcess, small_disk: Path
) -> None:
    """A canary waiting for `promote` when the state disk fills up: login links, sessions and
    pages still work; an action that must write answers 503 with the reason (nothing was
    changed); a notice whose delivery fails meanwhile is reported once there is space again
    (kept in memory); the agent lives through it and acts on the same click afterwards."""
    from http.cookies import SimpleCookie

    from dashboard.scenario import base_url, login_link
    from dashboard.test_dashboard_http import request
    from notify.receiver import ThreadedReceiver

    with ThreadedReceiver() as hook:
        project.write_config(extra=FULL_DISK_CANARY.replace("URL", hook.url))
        path = project.root / "nonstop.toml"
        path.write_text(path.read_text().replace('"bluegreen"', '"canary"', 1))
        agent.start()
        assert agent.wait_rollout(agent.deploy("v1")["id"])["status"] == "completed"
        hook.receiver.status = 500  # every notice from here on fails, after 3 retries
        rollout = agent.deploy("v2")["id"]
        wait_for("step 1", lambda: agent.status()["rollout"]["phase"] == "step", timeout=90)
        filler = fill(small_disk)
        full_since = os.stat(filler).st_mtime
        wait_for(
            "the full store in the status",
            lambda: [p for p in agent.status()["degraded"] if p["what"] == "store"],
            timeout=60,
        )

        link = login_link(agent)
        status, headers, body = request(link)
        assert status == 200, body
        base = base_url(link)
        session = SimpleCookie(headers["Set-Cookie"])["nonstop_session"].value
        cookie = {"Cookie": f"nonstop_session={session}"}
        for page in ("/", "/api/overview", f"/api/rollouts/{rollout}", "/api/history"):
            status, _, body = request(base + page, headers=cookie)
            assert status == 200, (page, body)
        status, _, body = request(base + "/api/session", headers=cookie)
        csrf = json.loads(body)["csrf"]
        pause = {**cookie, "X-CSRF-Token": csrf, "Origin": base}
        status, _, body = request(base + "/api/actions/pause", "POST", headers=pause)
        assert status == 503, body
        assert "the state store cannot write" in json.loads(body)["error"], body
        assert "nothing was changed" in json.loads(body)["error"], body
        refused = project.cli("pause")
        assert refused.returncode != 0
        assert "the state store cannot write" in refused.stderr, refused.stderr
        hook.until(lambda: hook.receiver.attempts >= 4 + 2)  # v2's notices, retried
        assert agent.process is not None
        assert agent.process.poll() is None

        filler.unlink()
        wait_for("the degraded status to clear", lambda: not agent.status()["degraded"], 90)
        status, _, body = request(base + "/api/actions/pause", "POST", headers=pause)
        assert status == 200, body
        wait_for("paused", lambda: agent.status()["rollout"]["paused"])
        events = agent.call("GET", f"/v1/events?limit=1000&rollout={rollout}")
        events += agent.call("GET", "/v1/events?limit=1000")
        failed = [e for e in events if e["message"].startswith("notify ") and e["ts"] >= full_since]
        assert failed, [e["message"] for e in events]
        agent.call("POST", "/v1/command", {"command": "abort"})
        agent.wait_rollout(rollout, timeout=120)
