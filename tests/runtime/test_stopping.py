"""Stop rules against real processes: where the stop signal goes, escaped children, quiet."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path

import pytest
from runtime_helpers import pid_of, script_spec, wait_until

from nonstop.drivers.runtime import procfs
from nonstop.drivers.runtime.base import InstanceHandle, InstanceSpec, StopReport, StopRules
from nonstop.drivers.runtime.local import LocalRuntime
from nonstop.drivers.runtime.localref import LocalRef
from nonstop.drivers.runtime.stopping import InstanceProcesses, signal_number
from nonstop.errors import RuntimeDriverError

# A prefork worker in miniature: the main process owns one pool child in its process group.
# On SIGTERM the main asks the child to finish its job (a flag file the child polls) and exits
# once it has; a child that gets SIGTERM itself dies mid-job, as a Celery pool child does.
PREFORK = """
import os, signal, sys, time
flag = sys.argv[0] + ".finish"
child = os.fork()
if child == 0:
    def cut(*_):
        print("child killed mid-job", flush=True)
        os._exit(3)
    signal.signal(signal.SIGTERM, cut)
    open(flag + ".ready", "w").close()
    while not os.path.exists(flag):
        time.sleep(0.02)
    print("child finished its job", flush=True)
    os._exit(0)
def term(*_):
    print("main got SIGTERM", flush=True)
    open(flag, "w").close()
    os.waitpid(child, 0)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
while not os.path.exists(flag + ".ready"):  # both handlers in place before "pool up"
    time.sleep(0.01)
print("pool up", flush=True)
while True:
    time.sleep(0.05)
"""

# RQ's work-horse in miniature: the job runs in a child that left the group (setpgrp) and
# ignores SIGTERM; the main process exits at once on SIGTERM, leaving the horse behind.
ESCAPING_HORSE = """
import os, signal, sys, time
horse = os.fork()
if horse == 0:
    os.setpgrp()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"horse {os.getpid()} in group {os.getpgrp()}", flush=True)
    while not os.path.exists(sys.argv[1] + ".done"):
        time.sleep(0.02)
    print("horse finished its job", flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True:
    time.sleep(0.05)
"""

# A daemon: double fork and setsid, so its parent is gone by the time the instance stops;
# only the NONSTOP_RUN tag in its environment says whose it is.
DAEMON = """
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"daemon {os.getpid()}", flush=True)
        while True:
            time.sleep(0.05)
    os._exit(0)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True:
    time.sleep(0.05)
"""

QUIET = """
import signal, sys, time
signal.signal(signal.SIGTSTP, lambda *_: print("quiet: no new jobs", flush=True))
print("up", flush=True)
while True:
    time.sleep(0.05)
"""


def _log(runtime: LocalRuntime, handle: InstanceHandle) -> list[str]:
    return runtime.read_log(handle, 20)


@pytest.mark.parametrize(
    ("kill_mode", "child_says"),
    [("main", "child finished its job"), ("group", "child killed mid-job")],
)
async def test_kill_mode_decides_who_gets_the_stop_signal(
    runtime: LocalRuntime, tmp_path: Path, kill_mode: str, child_says: str
) -> None:
    handle = await runtime.start(script_spec(tmp_path, PREFORK))
    await wait_until(lambda: "pool up" in _log(runtime, handle))
    report = await runtime.stop(handle, "SIGTERM", 10.0, kill_mode=kill_mode)  # type: ignore[arg-type]
    assert report == StopReport()
    # Main and child may print at the same instant into the same log: their lines can run
    # together ("main got SIGTERMchild killed mid-job"), so look for the words, not the line.
    assert any(child_says in line for line in _log(runtime, handle))
    assert procfs.group_members(pid_of(handle)) == []


async def test_escaped_child_finishes_before_the_stop_returns(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """The main process is gone at once, but the instance is not stopped until the horse that
    left its group is done with its job."""
    spec = script_spec(tmp_path, ESCAPING_HORSE)
    spec = dataclasses.replace(spec, command=spec.command.replace("{port}", f"{tmp_path}/job"))
    handle = await runtime.start(spec)
    await wait_until(lambda: any("horse" in line for line in _log(runtime, handle)))
    stopping = asyncio.create_task(runtime.stop(handle, "SIGTERM", 30.0))
    await wait_until(lambda: not runtime.alive(handle))  # main exited at once
    assert not stopping.done()  # the horse still works: the stop waits for it
    (tmp_path / "job.done").touch()
    assert await stopping == StopReport()
    assert "horse finished its job" in _log(runtime, handle)


async def test_escaped_child_is_killed_at_the_deadline_and_reported(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    spec = script_spec(tmp_path, ESCAPING_HORSE)
    spec = dataclasses.replace(spec, command=spec.command.replace("{port}", f"{tmp_path}/job"))
    handle = await runtime.start(spec)
    await wait_until(lambda: any("horse" in line for line in _log(runtime, handle)))
    horse = int(next(line for line in _log(runtime, handle) if "horse" in line).split()[1])
    assert procfs.read_stat(horse).pgrp == horse  # type: ignore[union-attr]
    report = await runtime.stop(handle, "SIGTERM", 0.5)
    assert report == StopReport(killed=True, escaped=(horse,))
    assert "process group at the stop deadline (pid" in report.describe("s-1")
    assert procfs.read_stat(horse) is None or procfs.read_stat(horse).gone  # type: ignore[union-attr]


async def test_daemon_whose_parent_is_gone_is_found_by_its_tag(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    handle = await runtime.start(script_spec(tmp_path, DAEMON))
    await wait_until(lambda: any("daemon" in line for line in _log(runtime, handle)))
    daemon = int(next(line for line in _log(runtime, handle) if "daemon" in line).split()[1])
    stat = procfs.read_stat(daemon)
    assert stat is not None
    assert stat.ppid != pid_of(handle)
    assert stat.pgrp != pid_of(handle)
    assert (
        daemon not in InstanceProcesses(LocalRef.of(handle)).refresh()
    )  # not by group nor parentage
    assert daemon in InstanceProcesses(LocalRef.of(handle)).refresh(by_tag=True)
    report = await runtime.stop(handle, "SIGTERM", 0.3)
    assert report.escaped == (daemon,)
    await wait_until(lambda: procfs.read_stat(daemon) is None or procfs.read_stat(daemon).gone)  # type: ignore[union-attr]


async def test_quiet_signal_and_quiet_command(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await runtime.start(script_spec(tmp_path, QUIET))
    await wait_until(lambda: "up" in _log(runtime, handle))
    assert await runtime.quiet(handle, StopRules(quiet_signal="SIGTSTP")) is None
    await wait_until(lambda: "quiet: no new jobs" in _log(runtime, handle))
    marker = tmp_path / "quieted"
    command = f'echo "$NONSTOP_INSTANCE $NONSTOP_PID" > {marker}'
    assert await runtime.quiet(handle, StopRules(quiet_command=command)) is None
    assert marker.read_text() == f"s-1 {pid_of(handle)}\n"
    failing = await runtime.quiet(handle, StopRules(quiet_command="echo nope >&2; exit 4"))
    assert failing == "quiet_command exited with code 4: nope"
    assert runtime.alive(handle)
    await runtime.stop(handle, "SIGTERM", 5.0)
    assert await runtime.quiet(handle, StopRules(quiet_signal="SIGTSTP")) == "not running"


async def test_unknown_quiet_signal_and_kill_mode(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await runtime.start(script_spec(tmp_path, QUIET))
    with pytest.raises(RuntimeDriverError, match="unknown quiet signal 'SIGNOPE'"):
        await runtime.quiet(handle, StopRules(quiet_signal="SIGNOPE"))
    with pytest.raises(RuntimeDriverError, match="unknown kill_mode 'all'"):
        await runtime.stop(handle, "SIGTERM", 1.0, kill_mode="all")  # type: ignore[arg-type]
    assert runtime.alive(handle)
    assert signal_number("SIGTSTP") == 20
    assert os.getpid() not in InstanceProcesses(LocalRef.of(handle)).refresh(by_tag=True)


async def test_under_the_shell_main_means_the_programs_it_runs(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """`cd . && python prefork.py`: the shell passes no signal on, so the program it runs gets
    the stop signal, and its pool child still finishes its job."""
    script = tmp_path / "prefork.py"
    script.write_text(PREFORK)
    spec = InstanceSpec("sh-1", "s", f"cd . && {sys.executable} {script} # {{port}}", str(tmp_path))
    handle = await runtime.start(spec)
    await wait_until(lambda: "pool up" in _log(runtime, handle))
    assert await runtime.stop(handle, "SIGTERM", 10.0) == StopReport()
    assert "child finished its job" in _log(runtime, handle)
