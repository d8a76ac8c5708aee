"""Health probes and wait_ready against real servers: the sample app, a closed port and a
listener that never answers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from runtime_helpers import always, local_handle, pid_of, running, sample_spec, wait_until

from nonstop.config.schema import HealthConfig
from nonstop.drivers.runtime.base import InstanceHandle
from nonstop.drivers.runtime.health import new_session, probe, wait_ready
from nonstop.drivers.runtime.local import LocalRuntime, free_port

FAST = HealthConfig(interval=0.05, timeout=1.0)


def _at(port: int) -> InstanceHandle:
    return local_handle("x-1", "x", port)


async def test_probe_outcomes(runtime: LocalRuntime, tmp_path: Path, silent_server: int) -> None:
    handle = await runtime.start(sample_spec(tmp_path, FAIL_HEALTH="1"))
    assert await wait_ready(handle, FAST.model_copy(update={"path": "/"}), None, always) is None
    base = f"http://{handle.address}"
    closed = free_port()
    async with new_session() as session:
        assert (await probe(f"{base}/", 1.0, session=session)).ok
        failing = await probe(f"{base}/health", 1.0, session=session)
        assert (failing.ok, failing.status, failing.reason) == (False, 503, "status 503")
        assert (await probe(f"{base}/nope", 1.0, session=session)).reason == "status 404"
        refused = await probe(f"http://127.0.0.1:{closed}/health", 1.0, session=session)
        assert (refused.ok, refused.status, refused.reason) == (False, None, "connection refused")
        silent = await probe(f"http://127.0.0.1:{silent_server}/health", 0.2, session=session)
        assert (silent.ok, silent.reason) == (False, "timeout after 200ms")
    # without a session, probe makes (and closes) its own
    assert (await probe(f"{base}/", 1.0)).status == 200


async def test_a_redirect_counts_as_up() -> None:
    from aiohttp import web

    app = web.Application()

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    app.router.add_get("/health", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        result = await probe(f"http://127.0.0.1:{port}/health", 1.0)
        assert (result.ok, result.status) == (True, 302)
    finally:
        await runner.cleanup()


async def test_wait_ready_after_startup_delay(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await runtime.start(sample_spec(tmp_path, STARTUP_DELAY="0.4"))
    health = FAST.model_copy(update={"success_threshold": 2})
    assert await wait_ready(handle, health, None, running(runtime, handle)) is None
    assert (await probe(f"http://{handle.address}/health", 1.0)).ok


async def test_wait_ready_deadline(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await runtime.start(sample_spec(tmp_path, FAIL_HEALTH="1"))
    # bound before the deadline starts, so the last probe meets the app's 503 on any machine
    await wait_until(lambda: any("listening on" in line for line in runtime.read_log(handle)))
    reason = await wait_ready(handle, FAST, time.monotonic() + 0.5, running(runtime, handle))
    assert reason is not None
    assert reason.startswith("not ready after ")
    assert reason.endswith(": last probe: status 503")
    assert runtime.alive(handle)


async def test_wait_ready_start_period_with_nothing_listening() -> None:
    health = FAST.model_copy(update={"start_period": 0.3})
    reason = await wait_ready(_at(free_port()), health, None, always)
    assert reason is not None
    assert reason.endswith(": last probe: connection refused")


async def test_wait_ready_instance_exits(runtime: LocalRuntime, tmp_path: Path) -> None:
    """The instance dies after two failing probes: the reason names the last probe's answer.

    The test kills it from ``alive()`` itself, just before the third probe would go out, and
    waits until the kernel has it as exited: whatever the load on the machine, the probes
    before the death were answered (503) and none met the dead port."""
    handle = await runtime.start(sample_spec(tmp_path, FAIL_HEALTH="1"))
    await wait_until(lambda: any("listening on" in line for line in runtime.read_log(handle)))
    checks = 0

    async def alive() -> bool:
        nonlocal checks
        checks += 1
        if checks == 3:
            os.killpg(pid_of(handle), signal.SIGKILL)
            deadline = time.monotonic() + 30
            while runtime.alive(handle) and time.monotonic() < deadline:
                time.sleep(0.01)
        return runtime.alive(handle)

    patient = FAST.model_copy(update={"timeout": 30.0})
    reason = await wait_ready(handle, patient, None, alive)
    assert reason == "exited before it was ready (last probe: status 503)"
    assert runtime.exit_reason(handle) == "killed by SIGKILL"


async def test_wait_ready_notices_a_crash(runtime: LocalRuntime, tmp_path: Path) -> None:
    """A real crash (CRASH_AFTER) while probes fail. Which probe came last depends on the
    scheduler (a 503, a refused connection once the port closed, or none yet if the app was
    still starting), so only the exit itself is pinned here; the exact text is above."""
    handle = await runtime.start(sample_spec(tmp_path, FAIL_HEALTH="1", CRASH_AFTER="0.3"))
    reason = await wait_ready(handle, FAST, None, running(runtime, handle))
    assert reason is not None
    assert reason.startswith("exited before it was ready (last probe: "), reason
    assert runtime.exit_reason(handle) == "exited with code 1"
    assert "crashing as asked (CRASH_AFTER=0.3)" in runtime.read_log(handle, 3)[-1]


@pytest.mark.parametrize("threshold", [1, 3])
async def test_success_threshold_counts_passes(
    runtime: LocalRuntime, tmp_path: Path, threshold: int
) -> None:
    """Ready after exactly ``threshold`` passes in a row: the app's own counter shows them."""
    handle = await runtime.start(sample_spec(tmp_path))
    health = FAST.model_copy(update={"success_threshold": threshold, "path": "/"})
    assert await wait_ready(handle, health, None, running(runtime, handle)) is None
    async with new_session() as session, session.get(f"http://{handle.address}/metrics") as r:
        text = await r.text()
    assert f'http_requests_total{{status="200",release="v1"}} {threshold}' in text
