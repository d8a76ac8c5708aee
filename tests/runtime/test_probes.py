"""Readiness checks of process roles against real processes and sockets."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from runtime_helpers import local_handle, running, sample_spec, script_spec, wait_until

from nonstop.config.schema import HealthConfig, ReadinessConfig
from nonstop.drivers.runtime.health import wait_ready
from nonstop.drivers.runtime.local import LocalRuntime, free_port
from nonstop.drivers.runtime.probes import Check, ProbeContext, readiness_check

FAST = HealthConfig(interval=0.05, timeout=1.0)
SLEEPER = "import time\nwhile True:\n    time.sleep(0.05)\n"


def check(kind: str, tmp_path: Path, **settings: Any) -> Check:
    readiness = ReadinessConfig(kind=kind, **settings)
    context = ProbeContext(str(tmp_path), {"ROLE": "worker"}, LocalRuntime().facts)
    return readiness_check(readiness, FAST, context)


async def test_tcp_passes_when_the_port_accepts(tmp_path: Path) -> None:
    probe = check("tcp", tmp_path)
    closed = local_handle("t-1", "t", free_port())
    result = await probe(closed, 1.0)
    assert (result.ok, result.reason) == (False, "connection refused")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        listening = local_handle("t-1", "t", sock.getsockname()[1])
        assert (await probe(listening, 1.0)).ok


async def test_exec_runs_in_the_instance_directory_with_its_environment(tmp_path: Path) -> None:
    handle = local_handle("w-1", "w", 0, pid=4242)
    (tmp_path / "ready").write_text("")
    command = 'test -f ready && test "$ROLE" = worker && test "$NONSTOP_PID" = 4242'
    assert (await check("exec", tmp_path, command=command)(handle, 2.0)).ok
    failing = await check("exec", tmp_path, command="echo not yet >&2; exit 3")(handle, 2.0)
    assert (failing.ok, failing.reason) == (False, "command exited with code 3: not yet")
    slow = await check("exec", tmp_path, command="sleep 5")(handle, 0.2)
    assert (slow.ok, slow.reason) == (False, "timeout after 200ms")


async def test_none_waits_for_min_uptime(tmp_path: Path) -> None:
    probe = check("none", tmp_path, min_uptime=60)
    young = local_handle("w-1", "w", 0, started_at=time.time())
    result = await probe(young, 1.0)
    assert not result.ok
    assert "of min_uptime 1m" in result.reason
    old = local_handle("w-1", "w", 0, started_at=time.time() - 61)
    assert (await probe(old, 1.0)).ok


async def test_http_probes_the_role_path(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await runtime.start(sample_spec(tmp_path))
    probe = check("http", tmp_path, path="/health")
    reason = await wait_ready(handle, FAST, None, running(runtime, handle), check=probe)
    assert reason is None
    missing = await check("http", tmp_path, path="/nope")(handle, 1.0)
    assert missing.reason == "status 404"


async def test_the_web_role_probes_health_path_over_http(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """No readiness table (the web role): the registry's http check on ``health.path``."""
    handle = await runtime.start(sample_spec(tmp_path, FAIL_HEALTH="1"))
    context = ProbeContext(str(tmp_path), {}, runtime.facts)
    web = readiness_check(None, FAST.model_copy(update={"path": "/"}), context)
    assert await wait_ready(handle, FAST, None, running(runtime, handle), check=web) is None
    failing = readiness_check(None, FAST, context)  # /health answers 503 with FAIL_HEALTH
    assert (await failing(handle, 1.0)).reason == "status 503"


async def test_wait_ready_with_a_role_check_notices_an_exit(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    handle = await runtime.start(script_spec(tmp_path, "import sys\nsys.exit(2)\n"))
    await wait_until(lambda: not runtime.alive(handle))
    probe = check("none", tmp_path, min_uptime=5)
    reason = await wait_ready(handle, FAST, None, running(runtime, handle), check=probe)
    assert reason is not None
    assert reason.startswith("exited before it was ready")
    worker = await runtime.start(script_spec(tmp_path, SLEEPER, "w-2"))
    quick = check("none", tmp_path, min_uptime=0.1)
    assert await wait_ready(worker, FAST, None, running(runtime, worker), check=quick) is None
