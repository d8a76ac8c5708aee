"""The supervisor: backoff arithmetic from tables; restarts and readiness with real processes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from runtime_helpers import pid_of, sample_spec, script_spec, wait_until

from nonstop.config.schema import HealthConfig
from nonstop.drivers.runtime.base import InstanceHandle, InstanceSpec
from nonstop.drivers.runtime.local import LocalRuntime
from nonstop.drivers.runtime.supervise import (
    Readiness,
    Supervisor,
    SupervisorEvent,
    backoff_delay,
    next_attempt,
)

FAST = HealthConfig(
    interval=0.05,
    timeout=0.5,
    liveness_interval=0.1,
    failure_threshold=2,
    liveness_failure_threshold=3,
)


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 4.0),
        (4, 8.0),
        (5, 16.0),
        (6, 32.0),
        (7, 60.0),
        (8, 60.0),
        (100, 60.0),
        (5000, 60.0),
    ],
)
def test_backoff_doubles_from_1s_to_a_60s_cap(attempt: int, delay: float) -> None:
    assert backoff_delay(attempt) == delay


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "delay"),
    [(1, 0.5, 10.0, 0.5), (3, 0.5, 10.0, 2.0), (6, 0.5, 10.0, 10.0)],
)
def test_backoff_with_other_base_and_cap(
    attempt: int, base: float, cap: float, delay: float
) -> None:
    assert backoff_delay(attempt, base, cap) == delay


@pytest.mark.parametrize(
    ("previous", "up_for", "expected"),
    [
        (0, 0.5, 1),  # first crash: attempt 1 (1 s)
        (1, 2.0, 2),  # crashed again 2 s after the restart: the streak goes on (2 s)
        (6, 59.9, 7),  # just short of a minute up: still a streak
        (6, 60.0, 1),  # up a full minute: the streak is over, back to 1 s
        (3, 3600.0, 1),
    ],
)
def test_streak_resets_after_a_minute_up(previous: int, up_for: float, expected: int) -> None:
    assert next_attempt(previous, up_for) == expected


class Recorder:
    """Collects events with the readiness the supervisor reported at that very moment."""

    def __init__(self) -> None:
        self.supervisor: Supervisor | None = None
        self.events: list[tuple[SupervisorEvent, Readiness]] = []
        self.hook: Callable[[SupervisorEvent], None] | None = None

    def __call__(self, event: SupervisorEvent) -> None:
        assert self.supervisor is not None
        self.events.append((event, self.supervisor.readiness(event.instance_id)))
        if self.hook is not None:
            self.hook(event)

    def kinds(self) -> list[str]:
        return [event.kind for event, _ in self.events]

    def of(self, kind: str) -> list[SupervisorEvent]:
        return [event for event, _ in self.events if event.kind == kind]


@pytest.fixture
async def recorder(runtime: LocalRuntime) -> AsyncIterator[Recorder]:
    rec = Recorder()
    yield rec
    if rec.supervisor is not None:
        await rec.supervisor.close()


def supervise(runtime: LocalRuntime, rec: Recorder, health: HealthConfig = FAST) -> Supervisor:
    rec.supervisor = Supervisor(runtime, health, rec)
    return rec.supervisor


async def listening(runtime: LocalRuntime, handle: InstanceHandle) -> None:
    """The sample app has bound its port (start() returns after at most bind_grace, 0.3 s,
    which a loaded machine may not be enough for)."""
    await wait_until(lambda: any("listening on" in line for line in runtime.read_log(handle)))


async def test_crashing_instance_is_restarted_with_backoff(
    runtime: LocalRuntime, recorder: Recorder, tmp_path: Path
) -> None:
    spec = sample_spec(tmp_path, STARTUP_DELAY="0.4", CRASH_AFTER="1")
    handle = await runtime.start(spec)
    supervisor = supervise(runtime, recorder)
    supervisor.add(spec, handle)
    assert supervisor.readiness("v1-1") == Readiness(
        False, supervisor.readiness("v1-1").since, "starting"
    )

    await wait_until(lambda: len(recorder.of("exited")) == 2, timeout=20)
    assert recorder.kinds() == ["ready", "exited", "restarted", "ready", "exited"]
    assert [e.message for e in recorder.of("exited")] == [
        "instance v1-1 exited with code 1; restarting in 1s",
        "instance v1-1 exited with code 1; restarting in 2s",
    ]
    (restarted, at_restart), (ready_again, at_ready) = recorder.events[2], recorder.events[3]
    # a new process on the same (free) port, reported for re-routing
    assert restarted.handle is not None
    assert restarted.handle.port == handle.port
    assert pid_of(restarted.handle) != pid_of(handle)
    # invariant 1: not ready after the restart until its own probe passed
    assert (at_restart.ready, at_restart.reason, at_restart.restarts) == (False, "starting", 1)
    assert at_ready.ready
    assert at_ready.since >= at_restart.since
    assert ready_again.handle == restarted.handle
    assert supervisor.readiness("v1-1").reason == "exited with code 1"
    assert not supervisor.readiness("v1-1").ready


async def test_failing_liveness_restarts_a_running_instance(
    runtime: LocalRuntime, recorder: Recorder, tmp_path: Path
) -> None:
    spec = sample_spec(tmp_path, FAIL_HEALTH="1")
    handle = await runtime.start(spec)
    await listening(runtime, handle)  # every probe meets the app's 503, not a closed port
    supervisor = supervise(runtime, recorder)
    supervisor.add(spec, handle, ready=True)  # as if it had passed, then started failing
    await wait_until(lambda: "restarted" in recorder.kinds(), timeout=10)
    assert recorder.kinds()[:3] == ["not_ready", "unhealthy", "restarted"]
    assert [e.message for e in recorder.of("not_ready")] == [
        "instance v1-1 is not ready: 2 failed probes in a row: status 503"
    ]
    assert recorder.of("unhealthy")[0].message == (
        "instance v1-1 failed 3 health probes in a row (status 503); restarting in 1s"
    )
    assert not runtime.alive(handle)  # the unhealthy process was stopped, not leaked
    assert runtime.exit_reason(handle) == "exited with code 0"  # SIGTERM, drained
    new = supervisor.handle("v1-1")
    assert runtime.alive(new)


async def test_restart_moves_to_a_new_port_when_the_old_one_is_taken(
    runtime: LocalRuntime, recorder: Recorder, tmp_path: Path
) -> None:
    spec = InstanceSpec("w-1", "w", "echo failing >&2; exit 3 # {port}", str(tmp_path))
    handle = await runtime.start(spec)
    squatter = socket.socket()
    recorder.hook = lambda event: (
        _listen(squatter, handle.port)
        if event.kind == "exited" and not recorder.of("restarted")
        else None
    )
    supervisor = supervise(runtime, recorder)
    with squatter:
        supervisor.add(spec, handle)
        await wait_until(lambda: "restarted" in recorder.kinds(), timeout=10)
    assert recorder.of("exited")[0].message == "instance w-1 exited with code 3; restarting in 1s"
    restarted = recorder.of("restarted")[0]
    assert restarted.handle is not None
    assert restarted.handle.port != handle.port
    assert restarted.message == (
        f"instance w-1 restarted (pid {pid_of(restarted.handle)}, port {restarted.handle.port})"
    )


def _listen(sock: socket.socket, port: int) -> None:
    sock.bind(("127.0.0.1", port))
    sock.listen()


async def test_not_ready_within_start_period(
    runtime: LocalRuntime, recorder: Recorder, tmp_path: Path
) -> None:
    spec = sample_spec(tmp_path, FAIL_HEALTH="1")
    handle = await runtime.start(spec)
    await listening(runtime, handle)  # the last probe before 300ms meets the app's 503
    supervisor = supervise(runtime, recorder, FAST.model_copy(update={"start_period": 0.3}))
    supervisor.add(spec, handle)
    await wait_until(lambda: "unhealthy" in recorder.kinds(), timeout=10)
    assert recorder.of("unhealthy")[0].message == (
        "instance v1-1 not ready after 300ms: last probe: status 503; restarting in 1s"
    )
    assert "ready" not in recorder.kinds()
    await wait_until(lambda: not runtime.alive(handle))


async def test_remove_stops_watching_but_not_the_instance(
    runtime: LocalRuntime, recorder: Recorder, tmp_path: Path
) -> None:
    spec = sample_spec(tmp_path)
    handle = await runtime.start(spec)
    supervisor = supervise(runtime, recorder)
    supervisor.add(spec, handle)
    await wait_until(lambda: supervisor.snapshot()["v1-1"].ready)
    probe = supervisor.last_probe("v1-1")
    assert probe is not None
    assert (probe.ok, probe.status) == (True, 200)
    await supervisor.remove("v1-1")
    assert supervisor.snapshot() == {}
    assert runtime.alive(handle)
    await runtime.stop(handle, "SIGKILL", 0)
    await asyncio.sleep(0.3)  # a watcher still running would now report "exited"
    assert recorder.kinds() == ["ready"]


class GatedRuntime(LocalRuntime):
    """The real runtime, with a gate inside start() so a test can act mid-restart."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir=log_dir)
        self.starting = asyncio.Event()
        self.gate = asyncio.Event()

    async def start(self, spec: InstanceSpec) -> InstanceHandle:
        """Spawns, then holds the handle back until the gate opens (as start() does while
        it watches a new instance bind its port)."""
        handle = await super().start(spec)
        self.starting.set()
        await self.gate.wait()
        return handle


async def test_remove_during_a_restart_stops_the_new_process(tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    source = f"""
import pathlib, runpy, sys
marker = pathlib.Path({str(marker)!r})
if not marker.exists():
    marker.touch()
    sys.exit(1)
sys.argv = ["sampleapp", "--port", sys.argv[1]]
runpy.run_module("nonstop.demo.sampleapp", run_name="__main__")
"""
    spec = script_spec(tmp_path, source)
    runtime = GatedRuntime(tmp_path / "logs")
    runtime.gate.set()
    handle = await runtime.start(spec)
    runtime.gate.clear()
    runtime.starting.clear()
    rec = Recorder()
    try:
        async with supervise(runtime, rec) as supervisor:
            supervisor.add(spec, handle)
            await asyncio.wait_for(runtime.starting.wait(), 10)  # the restart is under way
            removing = asyncio.create_task(supervisor.remove(spec.instance_id))
            await asyncio.sleep(0.05)
            runtime.gate.set()
            await removing
        assert rec.kinds() == ["exited"]
        assert runtime.started() == []  # the process started for the restart was stopped
    finally:
        for leftover in runtime.started():
            await runtime.stop(leftover, "SIGKILL", 0)
