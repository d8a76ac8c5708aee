"""The sample app's /ws: RFC 6455 pieces from worked examples, the endpoint as a real process."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from runtime_helpers import http_get, pid_of, running, sample_spec, wait_until

from nonstop.config.schema import HealthConfig
from nonstop.demo.sampleapp import (
    CLOSE,
    PING,
    TEXT,
    Connections,
    accept_key,
    close_payload,
    encode_frame,
    read_frame,
)
from nonstop.drivers.runtime.base import InstanceHandle
from nonstop.drivers.runtime.health import wait_ready
from nonstop.drivers.runtime.local import LocalRuntime

FAST = HealthConfig(interval=0.05)


def test_accept_key_is_rfc_6455s_own_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("opcode", "payload", "head"),
    [
        (TEXT, b"hi", b"\x81\x02"),
        (TEXT, b"x" * 125, b"\x81\x7d"),
        (TEXT, b"x" * 126, b"\x81\x7e\x00\x7e"),
        (TEXT, b"x" * 65536, b"\x81\x7f" + (65536).to_bytes(8, "big")),
        (CLOSE, close_payload(1001, "bye"), b"\x88\x05"),
        (PING, b"", b"\x89\x00"),
    ],
)
def test_frames_round_trip_with_every_length_form(opcode: int, payload: bytes, head: bytes) -> None:
    frame = encode_frame(opcode, payload)
    assert frame.startswith(head)
    assert read_frame(io.BufferedReader(io.BytesIO(frame))) == (opcode, payload)


def test_a_masked_client_frame_is_unmasked() -> None:
    # RFC 6455 5.7: a masked "Hello" from a client.
    frame = bytes.fromhex("818537fa213d7f9f4d5158")
    assert read_frame(io.BufferedReader(io.BytesIO(frame))) == (TEXT, b"Hello")


@pytest.mark.parametrize(("draw", "hint"), [(0.0, "0"), (0.5, "500"), (0.999, "999")])
def test_reconnect_hints_spread_over_the_window(draw: float, hint: str) -> None:
    assert Connections(1.0, rng=lambda: draw).hint() == f"reconnect-after-ms={hint}"


async def _ready(runtime: LocalRuntime, tmp_path: Path, **env: str) -> InstanceHandle:
    handle = await runtime.start(sample_spec(tmp_path, **env))
    assert await wait_ready(handle, FAST, None, running(runtime, handle)) is None
    return handle


async def test_hello_echo_and_a_1001_with_a_hint_on_sigterm(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    handle = await _ready(runtime, tmp_path, WS_RECONNECT_WINDOW="2")
    url = f"http://{handle.address}/ws"
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url) for _ in range(3)]
        assert sockets[0]._response.headers["X-Release"] == "v1"
        for ws in sockets:
            hello = json.loads(await ws.receive_str(timeout=5))
            assert (hello["type"], hello["release"], hello["instance"]) == (
                "hello",
                "v1",
                handle.instance_id,
            )
        await sockets[0].send_str("ping me")
        assert await sockets[0].receive_str(timeout=5) == "ping me"
        os.kill(pid_of(handle), signal.SIGTERM)
        for ws in sockets:
            closed = await ws.receive(timeout=10)
            assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 1001)
            hint = int(str(closed.extra).removeprefix("reconnect-after-ms="))
            assert 0 <= hint < 2000
            await ws.close()
    await wait_until(lambda: not runtime.alive(handle))
    assert runtime.exit_reason(handle) == "exited with code 0"


async def test_a_plain_get_on_ws_is_refused_with_a_sentence(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    handle = await _ready(runtime, tmp_path)
    status, _headers, body = await http_get(f"http://{handle.address}/ws")
    assert (status, body) == (400, "a WebSocket handshake is expected here (Upgrade: websocket)\n")


async def test_the_quiet_signal_closes_websockets_and_the_app_goes_on_serving(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """SIGUSR1 (``[app] quiet_signal`` for a release kept warm): every WebSocket gets 1001 and
    a hint, /health and / still answer, a new WebSocket is accepted, and SIGTERM still stops."""
    handle = await _ready(runtime, tmp_path, WS_RECONNECT_WINDOW="2")
    url = f"http://{handle.address}/ws"
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url) for _ in range(2)]
        for ws in sockets:
            await ws.receive_str(timeout=5)  # hello
        os.kill(pid_of(handle), signal.SIGUSR1)
        for ws in sockets:
            closed = await ws.receive(timeout=10)
            assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 1001)
            assert str(closed.extra).startswith("reconnect-after-ms=")
            await ws.close()
        assert runtime.alive(handle)
        assert (await http_get(f"http://{handle.address}/health"))[0] == 200
        assert (await http_get(f"http://{handle.address}/"))[0] == 200
        again = await session.ws_connect(url)
        assert json.loads(await again.receive_str(timeout=5))["type"] == "hello"
        os.kill(pid_of(handle), signal.SIGTERM)
        closed = await again.receive(timeout=10)
        assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 1001)
        await again.close()
    await wait_until(lambda: not runtime.alive(handle))
    assert runtime.exit_reason(handle) == "exited with code 0"
