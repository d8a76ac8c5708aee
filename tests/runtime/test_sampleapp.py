"""The bundled sample app: its pure parts from tables, its endpoints and knobs as a real process."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from runtime_helpers import http_get, pid_of, running, sample_spec, wait_until

from nonstop.config.schema import HealthConfig
from nonstop.demo.sampleapp import Metrics, parse_args, should_fail
from nonstop.drivers.runtime.base import InstanceHandle
from nonstop.drivers.runtime.health import wait_ready
from nonstop.drivers.runtime.local import LocalRuntime

FAST = HealthConfig(interval=0.05)


@pytest.mark.parametrize(
    ("rate", "failing"),
    [
        (0.0, []),
        (0.25, [4, 8, 12]),
        (0.5, [2, 4, 6, 8, 10, 12]),
        (0.1, [10]),
        (1 / 3, [3, 6, 9, 12]),
        (1.0, list(range(1, 13))),
    ],
)
def test_error_rate_is_exact_and_spread(rate: float, failing: list[int]) -> None:
    assert [n for n in range(1, 13) if should_fail(n, rate)] == failing


def test_metrics_text() -> None:
    metrics = Metrics("v2")
    fresh = metrics.render()  # series exist at 0 before any request (Prometheus increase())
    assert 'http_requests_total{status="200",release="v2"} 0\n' in fresh
    assert 'http_requests_total{status="500",release="v2"} 0\n' in fresh
    metrics.observe(200, 0.003)
    metrics.observe(200, 0.04)
    metrics.observe(500, 0.3)
    text = metrics.render()
    assert 'http_requests_total{status="200",release="v2"} 2\n' in text
    assert 'http_requests_total{status="500",release="v2"} 1\n' in text
    # cumulative buckets: 0.003 <= 5ms; 0.04 <= 50ms; 0.3 <= 500ms
    for bound, count in [("0.005", 1), ("0.025", 1), ("0.05", 2), ("0.25", 2), ("0.5", 3)]:
        assert (
            f'http_request_duration_seconds_bucket{{release="v2",le="{bound}"}} {count}\n' in text
        )
    assert 'http_request_duration_seconds_bucket{release="v2",le="+Inf"} 3\n' in text
    assert 'http_request_duration_seconds_sum{release="v2"} 0.343000\n' in text
    assert 'http_request_duration_seconds_count{release="v2"} 3\n' in text


def test_settings_from_flags_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERSION", "v3")
    monkeypatch.setenv("ERROR_RATE", "0.5")
    monkeypatch.setenv("NONSTOP_INSTANCE", "v3-2")
    monkeypatch.setenv("NO_GRACEFUL", "1")
    settings = parse_args(["--port", "8001", "--error-rate", "0.1"])
    assert (settings.port, settings.version, settings.release, settings.instance) == (
        8001,
        "v3",
        "v3",
        "v3-2",
    )
    assert (settings.error_rate, settings.graceful) == (0.1, False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "1", "--error-rate", "2"], "--error-rate/ERROR_RATE must be between 0 and 1"),
        (["--port", "1", "--latency-ms", "slow"], "argument --latency-ms: invalid float value"),
        ([], "--port (or PORT) is required"),
    ],
)
def test_bad_settings(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PORT", raising=False)
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


async def _ready(runtime: LocalRuntime, tmp_path: Path, **env: str) -> InstanceHandle:
    handle = await runtime.start(sample_spec(tmp_path, **env))
    assert await wait_ready(handle, FAST, None, running(runtime, handle)) is None
    return handle


async def test_error_rate_and_metrics(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await _ready(runtime, tmp_path, ERROR_RATE="0.25")
    base = f"http://{handle.address}"
    statuses = [(await http_get(f"{base}/"))[0] for _ in range(8)]
    assert statuses == [200, 200, 200, 500, 200, 200, 200, 500]
    _, headers, text = await http_get(f"{base}/metrics")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'http_requests_total{status="200",release="v1"} 6\n' in text
    assert 'http_requests_total{status="500",release="v1"} 2\n' in text
    assert 'http_request_duration_seconds_count{release="v1"} 8\n' in text


async def test_latency_and_slow(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await _ready(runtime, tmp_path, LATENCY_MS="30")
    base = f"http://{handle.address}"
    assert (await http_get(f"{base}/"))[0] == 200
    assert (await http_get(f"{base}/slow?ms=60"))[2] == "slept 60ms\n"
    text = (await http_get(f"{base}/metrics"))[2]
    # both took at least 30 ms: none below the 25 ms bucket; only /slow is past 50 ms
    assert 'http_request_duration_seconds_bucket{release="v1",le="0.025"} 0\n' in text
    assert 'http_request_duration_seconds_count{release="v1"} 2\n' in text


async def test_stream(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await _ready(runtime, tmp_path)
    status, headers, body = await http_get(
        f"http://{handle.address}/stream?seconds=0.3&interval=0.1"
    )
    assert (status, headers["Transfer-Encoding"]) == (200, "chunked")
    assert body == "tick 1/3\ntick 2/3\ntick 3/3\n"
    assert (await http_get(f"http://{handle.address}/missing"))[:1] == (404,)


async def test_flags(runtime: LocalRuntime, tmp_path: Path) -> None:
    spec = sample_spec(tmp_path, "v9-1", "v9")
    spec = dataclasses.replace(spec, command=spec.command + " --version nine --error-rate 1")
    handle = await runtime.start(spec)
    assert await wait_ready(handle, FAST, None, running(runtime, handle)) is None
    status, headers, body = await http_get(f"http://{handle.address}/")
    assert (status, body, headers["X-Release"]) == (500, "version=nine instance=v9-1\n", "v9")


async def test_graceful_sigterm_finishes_in_flight(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await _ready(runtime, tmp_path)
    base = f"http://{handle.address}"
    async with aiohttp.ClientSession() as idle, aiohttp.ClientSession() as busy:
        async with idle.get(f"{base}/") as first:  # opens a keep-alive connection
            await first.read()
        slow = asyncio.create_task(_fetch(busy, f"{base}/slow?ms=800"))
        await _wait_in_flight(handle, 1)
        os.kill(pid_of(handle), signal.SIGTERM)
        # on the kept-alive connection: "ok" until the app has taken the signal in, then
        # "draining" (and the connection closes)
        for _ in range(100):
            async with idle.get(f"{base}/health") as health:
                answer = (health.status, await health.text(), health.headers.get("Connection"))
            if answer[0] != 200:
                break
        assert answer == (503, "draining\n", "close")
        assert await slow == (200, "slept 800ms\n")
    await wait_until(lambda: not runtime.alive(handle))
    assert runtime.exit_reason(handle) == "exited with code 0"


async def test_no_graceful_drops_in_flight(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await _ready(runtime, tmp_path, NO_GRACEFUL="1")
    async with aiohttp.ClientSession() as session:
        slow = asyncio.create_task(_fetch(session, f"http://{handle.address}/slow?ms=3000"))
        await _wait_in_flight(handle, 1)
        os.kill(pid_of(handle), signal.SIGTERM)
        # the connection is cut (aiohttp may retry a GET once, then finds the port closed)
        with pytest.raises(aiohttp.ClientError):  # disconnected, reset or refused
            await slow
    await wait_until(lambda: not runtime.alive(handle))
    assert runtime.exit_reason(handle) == "killed by SIGTERM"


async def _fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def _wait_in_flight(handle: InstanceHandle, count: int) -> None:
    """Until the app reports ``count`` requests in flight (its own gauge on /metrics)."""
    line = f'http_requests_in_flight{{release="{handle.release}"}} {count}\n'
    for _ in range(500):
        if line in (await http_get(f"http://{handle.address}/metrics"))[2]:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never saw {line!r}")
