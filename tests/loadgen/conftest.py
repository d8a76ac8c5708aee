"""Fixtures: real servers on free ports, stopped after each test."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from loadgen_servers import App, ThreadedServer, hang_up, one_answer_per_connection


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def server(app: App) -> Iterator[ThreadedServer]:
    running = ThreadedServer(app.serve).start()
    yield running
    running.shutdown()


@pytest.fixture
def hang_up_server() -> Iterator[ThreadedServer]:
    running = ThreadedServer(hang_up).start()
    yield running
    running.shutdown()


@pytest.fixture
def one_answer_server() -> Iterator[ThreadedServer]:
    running = ThreadedServer(one_answer_per_connection).start()
    yield running
    running.shutdown()


@pytest.fixture
def refused_url() -> str:
    """A URL on a port nobody listens on (bound then closed, so no other test takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
