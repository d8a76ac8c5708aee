"""LocalRuntime against real processes: the sample app, inline scripts and shell commands."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import sys
from pathlib import Path

import pytest
from runtime_helpers import http_get, pid_of, running, sample_spec, script_spec, wait_until

from nonstop.config.schema import HealthConfig
from nonstop.drivers.runtime.base import InstanceHandle, InstanceSpec, InstanceStatus
from nonstop.drivers.runtime.health import wait_ready
from nonstop.drivers.runtime.local import (
    LocalRuntime,
    describe_returncode,
    free_port,
    port_in_use,
    shell_command,
)
from nonstop.drivers.runtime.localref import LocalRef
from nonstop.errors import RuntimeDriverError

IGNORES_SIGTERM = """
import signal, socket, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("python3 app.py --port 8001", "exec python3 app.py --port 8001"),
        ("./server --port $PORT > out.log", "exec ./server --port $PORT > out.log"),
        ("cd web && python3 app.py", "cd web && python3 app.py"),
        ("a | b", "a | b"),
        ("a; b", "a; b"),
        ("(cd web; ./run)", "(cd web; ./run)"),
        ("FOO=1 ./run", "FOO=1 ./run"),
        ("if true; then ./run; fi", "if true; then ./run; fi"),
        ("exec ./run", "exec ./run"),
        ("exit 0 # 8001", "exit 0 # 8001"),
        ("cd web", "cd web"),
        ("./run `date`", "./run `date`"),
    ],
)
def test_shell_command_execs_only_simple_commands(command: str, expected: str) -> None:
    assert shell_command(command) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_returncode(code: int, expected: str) -> None:
    assert describe_returncode(code) == expected


async def test_start_serve_stop_the_sample_app(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await runtime.start(sample_spec(tmp_path, "v2-1", "v2"))
    assert runtime.alive(handle)
    assert runtime.exit_reason(handle) is None
    assert LocalRef.of(handle).start_marker
    assert runtime.facts(handle) == {"pid": pid_of(handle)}
    assert (handle.release, handle.instance_id) == ("v2", "v2-1")
    assert (
        await wait_ready(handle, HealthConfig(interval=0.05), None, running(runtime, handle))
        is None
    )
    status, headers, body = await http_get(f"http://{handle.address}/")
    assert (status, body, headers["X-Release"]) == (200, "version=v2 instance=v2-1\n", "v2")

    await runtime.stop(handle, "SIGTERM", 5.0)
    assert not runtime.alive(handle)
    assert runtime.exit_reason(handle) == "exited with code 0"  # graceful: drained, exit 0
    assert "drained, exiting" in runtime.read_log(handle, 5)[-1]
    assert not port_in_use(handle.port)
    await runtime.stop(handle, "SIGTERM", 5.0)  # idempotent


async def test_environment_directory_and_port(runtime: LocalRuntime, tmp_path: Path) -> None:
    spec = InstanceSpec(
        instance_id="env-1",
        release="r7",
        command='echo "port={port} $PORT $NONSTOP_RELEASE $NONSTOP_INSTANCE $FOO $(pwd)"',
        cwd=str(tmp_path),
        env={"FOO": "bar"},
    )
    handle = await runtime.start(spec)
    await wait_until(lambda: not runtime.alive(handle))
    p = handle.port
    assert runtime.read_log(handle, 1) == [f"port={p} {p} r7 env-1 bar {tmp_path}"]
    assert runtime.exit_reason(handle) == "exited with code 0"


async def test_stop_escalates_to_sigkill(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await runtime.start(script_spec(tmp_path, IGNORES_SIGTERM))
    await wait_until(lambda: runtime.read_log(handle, 1) == ["ignoring SIGTERM"])
    await runtime.stop(handle, "SIGTERM", 0.3)
    assert not runtime.alive(handle)
    assert runtime.exit_reason(handle) == "killed by SIGKILL"


async def test_stop_reaches_the_whole_process_group(runtime: LocalRuntime, tmp_path: Path) -> None:
    """A compound command runs under the shell; stop must also end the shell's children."""
    spec = InstanceSpec("grp-1", "g", "sleep 30 & sleep 30; echo {port}", str(tmp_path))
    handle = await runtime.start(spec)
    await wait_until(lambda: len(_group(pid_of(handle))) == 3)  # sh + two sleeps
    await runtime.stop(handle, "SIGTERM", 5.0)
    assert _group(pid_of(handle)) == []


def _group(pgid: int) -> list[int]:
    from nonstop.drivers.runtime.procfs import group_members

    return group_members(pgid)


async def test_a_new_runtime_adopts_by_pid_and_start_marker(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    handle = await runtime.start(sample_spec(tmp_path))
    # start() returns once the port accepts (or after bind_grace): the app may not handle
    # SIGTERM yet, and one killed by it would not exit 0. It says so once it does.
    await wait_until(lambda: any("listening on" in line for line in runtime.read_log(handle)))
    stored = InstanceHandle.from_dict(json.loads(json.dumps(handle.to_dict())))
    adopter = LocalRuntime()
    assert await adopter.adopt(stored) == InstanceStatus("running")
    assert adopter.exit_reason(stored) is None

    ref = LocalRef.of(stored)
    other = dataclasses.replace(ref, start_marker=str(int(ref.start_marker) + 1))
    recycled = dataclasses.replace(stored, reference=other.dumps())
    assert await adopter.adopt(recycled) == InstanceStatus("exited", "exited")
    await adopter.stop(recycled, "SIGKILL", 1.0)  # not ours: must not be signalled
    assert runtime.alive(handle)

    await adopter.stop(stored, "SIGTERM", 5.0)
    assert not adopter.alive(stored)
    # not our child: no exit status to read
    assert await adopter.status(stored) == InstanceStatus("exited", "exited")
    assert not runtime.alive(handle)
    assert await runtime.status(handle) == InstanceStatus("exited", "exited with code 0")


async def test_instances_outlive_the_agent(tmp_path: Path) -> None:
    """An agent process starts an instance and is SIGKILLed; the instance keeps serving and a
    new runtime adopts and stops it."""
    agent = f"""
import asyncio, json, sys
from nonstop.drivers.runtime.base import InstanceSpec
from nonstop.drivers.runtime.local import LocalRuntime
spec = InstanceSpec("v1-1", "v1", {sys.executable!r} + " -m nonstop.demo.sampleapp --port {{port}}",
                    {str(tmp_path)!r})
handle = asyncio.run(LocalRuntime().start(spec))
print(json.dumps(handle.to_dict()), flush=True)
import time; time.sleep(60)
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", agent, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    handle = InstanceHandle.from_dict(json.loads(await proc.stdout.readline()))
    proc.kill()
    await proc.wait()
    adopter = LocalRuntime()
    try:
        assert adopter.alive(handle)
        health = HealthConfig(interval=0.05)
        assert await wait_ready(handle, health, None, running(adopter, handle)) is None
    finally:
        await adopter.stop(handle, "SIGTERM", 5.0)
    assert not adopter.alive(handle)


async def test_a_command_that_exits_at_once(runtime: LocalRuntime, tmp_path: Path) -> None:
    spec = InstanceSpec(
        "bad-1", "bad", "echo cannot open config.yml >&2; exit 3 # {port}", str(tmp_path)
    )
    handle = await runtime.start(spec)
    await wait_until(lambda: not runtime.alive(handle))
    assert runtime.exit_reason(handle) == "exited with code 3"
    assert runtime.read_log(handle, 10) == ["cannot open config.yml"]


async def test_a_fixed_port_already_taken(runtime: LocalRuntime, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = dataclasses.replace(sample_spec(tmp_path), port=port)
        with pytest.raises(RuntimeDriverError, match=f"port {port} on 127.0.0.1 is already in use"):
            await runtime.start(spec)
    assert runtime.started() == []


async def test_a_fixed_free_port_is_used(runtime: LocalRuntime, tmp_path: Path) -> None:
    port = free_port()
    handle = await runtime.start(dataclasses.replace(sample_spec(tmp_path), port=port))
    assert handle.port == port


async def test_lost_port_race_retries_on_another_port(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """The first run fails the way a server does when its port was taken meanwhile."""
    marker = tmp_path / "first-run-done"
    source = f"""
import pathlib, runpy, sys
marker = pathlib.Path({str(marker)!r})
if not marker.exists():
    marker.touch()
    print("OSError: [Errno 98] Address already in use", flush=True)
    sys.exit(1)
sys.argv = ["sampleapp", "--port", sys.argv[1]]
runpy.run_module("nonstop.demo.sampleapp", run_name="__main__")
"""
    handle = await runtime.start(script_spec(tmp_path, source))
    assert runtime.alive(handle)
    assert runtime.read_log(handle, 10)[0] == "OSError: [Errno 98] Address already in use"


async def test_missing_directory(runtime: LocalRuntime, tmp_path: Path) -> None:
    spec = dataclasses.replace(sample_spec(tmp_path), cwd=str(tmp_path / "nope"))
    with pytest.raises(RuntimeDriverError, match=r"working directory .*/nope does not exist"):
        await runtime.start(spec)


async def test_unknown_stop_signal(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await runtime.start(sample_spec(tmp_path))
    with pytest.raises(RuntimeDriverError, match="unknown stop signal 'SIGFOO'"):
        await runtime.stop(handle, "SIGFOO", 1.0)
    assert runtime.alive(handle)


async def test_many_quick_starts_do_not_leak(runtime: LocalRuntime, tmp_path: Path) -> None:
    handles = await asyncio.gather(
        *(
            runtime.start(InstanceSpec(f"q-{i}", "q", "exit 0 # {port}", str(tmp_path)))
            for i in range(5)
        )
    )
    await wait_until(lambda: not any(runtime.alive(h) for h in handles))
    assert [runtime.exit_reason(h) for h in handles] == ["exited with code 0"] * 5


async def test_address_in_use_on_every_attempt(runtime: LocalRuntime, tmp_path: Path) -> None:
    """A command that ignores {port} and binds a taken one fails the same way each time."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        fixed = taken.getsockname()[1]
        source = f"""
import socket, sys
try:
    socket.socket().bind(("127.0.0.1", {fixed}))
except OSError as exc:
    print(exc, flush=True)
    sys.exit(1)
"""
        with pytest.raises(RuntimeDriverError) as raised:
            await runtime.start(script_spec(tmp_path, source))
    assert str(raised.value) == (
        'instance s-1: exited with "address already in use" on 3 free ports in a row '
        "(does the command use {port}?); last output: [Errno 98] Address already in use"
    )


async def test_a_command_without_port_is_not_watched_for_a_port_race(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """A worker's command has no {port}: its "address already in use" is its own business
    (supervision sees it exit), not a lost race, so it starts once and is not retried."""
    spec = InstanceSpec("w-1", "w", "echo 'Address already in use'; exit 1", str(tmp_path))
    handle = await runtime.start(spec)
    await wait_until(lambda: not runtime.alive(handle))
    assert runtime.exit_reason(handle) == "exited with code 1"
    assert len(await runtime.log_tail(handle, 10)) == 1  # one run, not port_attempts of them


async def test_only_the_latest_ended_run_keeps_its_exit_status(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """A restarted instance does not pile up exit statuses: older runs become just "exited"."""
    handles = []
    for code in (1, 2, 3):
        handle = await runtime.start(
            InstanceSpec("r-1", "r", f"exit {code} # {{port}}", str(tmp_path))
        )
        await wait_until(lambda h=handle: not runtime.alive(h))
        handles.append(handle)
    assert [runtime.exit_reason(h) for h in handles] == [
        "exited",
        "exited with code 2",
        "exited with code 3",
    ]
