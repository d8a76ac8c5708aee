"""The runtime port's contract (drivers/runtime/base.py), run for every registered kind with
real processes: what the engine relies on from any runtime, local or not."""

from __future__ import annotations

import asyncio
import json
import sys
import typing
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from runtime_helpers import http_get, running, sample_spec

from nonstop.config.schema import HealthConfig, RuntimeConfig
from nonstop.drivers.runtime.base import (
    InstanceHandle,
    InstanceSpec,
    InstanceStatus,
    Runtime,
    StopReport,
)
from nonstop.drivers.runtime.health import wait_ready
from nonstop.drivers.runtime.registry import RUNTIMES, RuntimeContext, make_runtime
from nonstop.errors import UsageError

FAST = HealthConfig(interval=0.05)


class Started:
    """A runtime of one kind, and every handle it started (all stopped after the test)."""

    def __init__(self, kind: str, state: Path) -> None:
        self.kind, self.state = kind, state
        self.runtime = self.fresh()
        self.handles: list[InstanceHandle] = []

    def fresh(self) -> Runtime:
        """Another runtime of the kind on the same state dir: what a restarted agent builds."""
        return make_runtime(self.kind, RuntimeContext(self.state, self.state / "logs"))

    async def start(self, spec: InstanceSpec) -> InstanceHandle:
        handle = await self.runtime.start(spec)
        self.handles.append(handle)
        return handle


@pytest.fixture(params=sorted(RUNTIMES))
async def kind(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Started]:
    state = tmp_path / ".nonstop"
    state.mkdir()
    started = Started(request.param, state)
    yield started
    for handle in started.handles:
        await started.runtime.stop(handle, "SIGKILL", 0)


def stored(handle: InstanceHandle) -> InstanceHandle:
    """The handle as the store keeps it and a later agent reads it back."""
    return InstanceHandle.from_dict(json.loads(json.dumps(handle.to_dict())))


def test_the_config_offers_exactly_the_registered_kinds() -> None:
    assert set(typing.get_args(RuntimeConfig.model_fields["kind"].annotation)) == set(RUNTIMES)


def test_an_unknown_kind_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r'runtime.kind: "docker" is not available'):
        make_runtime("docker", RuntimeContext(tmp_path))


async def test_start_serve_status_stop(kind: Started, tmp_path: Path) -> None:
    handle = await kind.start(sample_spec(tmp_path, "v1-1", "v1"))
    assert (handle.instance_id, handle.release, handle.runtime) == ("v1-1", "v1", kind.kind)
    assert await kind.runtime.status(handle) == InstanceStatus("running")
    assert await wait_ready(handle, FAST, None, running(kind.runtime, handle)) is None
    status, _, body = await http_get(f"http://{handle.address}/")
    assert (status, body) == (200, "version=v1 instance=v1-1\n")
    assert all(isinstance(v, str | int) for v in kind.runtime.facts(handle).values())
    report = await kind.runtime.stop(handle, "SIGTERM", 5.0)
    assert report == StopReport()  # the app drained and exited on its own
    assert (await kind.runtime.status(handle)).exited
    assert await kind.runtime.stop(handle, "SIGTERM", 5.0) == StopReport()  # idempotent


async def wait_exited(runtime: Runtime, handle: InstanceHandle) -> InstanceStatus:
    """The status once it is "exited" (fails the test after a generous deadline)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not (status := await runtime.status(handle)).exited:
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.05)
    return status


async def test_a_later_runtime_adopts_a_stored_handle(kind: Started, tmp_path: Path) -> None:
    handle = await kind.start(sample_spec(tmp_path))
    later = kind.fresh()
    assert (await later.adopt(stored(handle))).running
    await later.stop(stored(handle), "SIGTERM", 5.0)
    assert (await later.status(stored(handle))).exited


async def test_adopting_a_handle_that_names_nothing_of_ours_is_exited(kind: Started) -> None:
    bogus = InstanceHandle("v9-1", "v9", "127.0.0.1", 1, "not a reference", 0.0, kind.kind)
    assert (await kind.fresh().adopt(bogus)).exited


async def test_exit_reason_and_output_of_a_failing_instance(kind: Started, tmp_path: Path) -> None:
    spec = InstanceSpec("bad-1", "bad", "echo no config >&2; exit 3 # {port}", str(tmp_path))
    handle = await kind.start(spec)
    assert await wait_exited(kind.runtime, handle) == InstanceStatus("exited", "exited with code 3")
    assert await kind.runtime.log_tail(handle, 5) == ["no config"]


async def test_sweep_stops_only_what_no_handle_accounts_for(kind: Started, tmp_path: Path) -> None:
    kept = await kind.start(sample_spec(tmp_path, "v1-1"))
    lost = await kind.start(sample_spec(tmp_path, "v1-2"))
    later = kind.fresh()  # an agent that only knows v1-1 (v1-2's handle was never written)
    swept = await later.sweep_strays([stored(kept)])
    assert len(swept) == 1
    assert "v1-2" in swept[0]
    assert (await wait_exited(later, stored(lost))).exited
    assert (await later.status(stored(kept))).running
    assert await later.sweep_strays([stored(kept)]) == []


async def test_a_worker_without_a_port_is_still_an_instance(kind: Started, tmp_path: Path) -> None:
    sleeper = f"{sys.executable} -c 'import time; time.sleep(60)'"
    spec = InstanceSpec("w:jobs-1", "w", sleeper, str(tmp_path))
    handle = await kind.start(spec)
    assert (await kind.runtime.status(handle)).running
    report = await kind.runtime.stop(handle, "SIGTERM", 5.0)
    assert not report.killed
    assert (await kind.runtime.status(handle)).exited
