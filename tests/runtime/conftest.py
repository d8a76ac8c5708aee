"""Fixtures for the runtime tests: a LocalRuntime whose instances are all stopped after the test."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from nonstop.drivers.runtime.local import LocalRuntime


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[LocalRuntime]:
    rt = LocalRuntime(log_dir=tmp_path / "logs")
    yield rt
    for handle in rt.started():
        await rt.stop(handle, "SIGKILL", 0)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) but never answers: probes time out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]
