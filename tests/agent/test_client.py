"""AgentClient over a real socket: what it sends, every shape of answer it reads (sized,
chunked, unsized, cut short, not HTTP, not JSON, an error), and the sentence each failure
becomes. The peer is a real unix socket served by a thread that plays scripted bytes; the
client against a real agent (unix socket and TCP listener) is in tests/cli/ and tests/e2e/."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nonstop.agent.client import AgentClient, request_target
from nonstop.agent.paths import Paths
from nonstop.errors import AgentUnavailable, NonstopError, StateError, UsageError


@dataclass
class Peer:
    """A unix socket at the project's agent.sock answering each connection with ``answer``."""

    paths: Paths
    answer: bytes = b""
    hang: bool = False
    received: list[bytes] = field(default_factory=list)
    _server: socket.socket | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.paths.ensure()
        self.paths.token.write_text("secret")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.paths.socket))
        self._server.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        assert self._server is not None
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                self.received.append(read_request(conn))
                if self.hang:
                    self._done.wait(30)
                    continue
                conn.sendall(self.answer)

    def stop(self) -> None:
        self._done.set()
        if self._server is not None:
            self._server.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    server = Peer(Paths(tmp_path))
    server.start()
    yield server
    server.stop()


def ok(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n".encode()
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body + extra


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (ok(b'{"a": 1}'), {"a": 1}),
        (ok(b'{"a": 1}', extra=b"ignored"), {"a": 1}),  # only Content-Length bytes are the body
        (ok(b""), None),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\n[1, \r\n3;x=y\r\n2, \r\n2\r\n3]\r\n0\r\n\r\n",
            [1, 2, 3],
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n[true]", [True]),  # unsized: to the end
        (ok(b'{"name": "caf\\u00e9"}'), {"name": "café"}),
    ],
    ids=["sized", "trailing-bytes", "empty", "chunked", "unsized", "unicode"],
)
def test_answers_are_read_whatever_their_framing(
    peer: Peer, answer: bytes, expected: object
) -> None:
    peer.answer = answer
    assert AgentClient(peer.paths).call("GET", "/v1/status") == expected


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (
            ok(b'{"error": "no rollout is in progress"}', "409 Conflict"),
            StateError,
            "no rollout is in progress",
        ),
        (ok(b'{"error": "unknown flag \\"x\\""}', "404 Not Found"), UsageError, 'unknown flag "x"'),
        (
            ok(b'{"error": "boom"}', "500 Internal Server Error"),
            NonstopError,
            "the agent failed (HTTP 500): boom",
        ),
        (
            ok(b"<html>oops</html>"),
            NonstopError,
            "the agent answered 200 with something that is not JSON: '<html>oops</html>'",
        ),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            NonstopError,
            "the agent answered with something that is not HTTP: 'SSH-2.0-OpenSSH_9.2'",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort",
            NonstopError,
            "the agent's answer was cut short (chunked body incomplete)",
        ),
    ],
    ids=["409", "404", "500", "not-json", "not-http", "chunk-cut"],
)
def test_bad_answers_become_one_sentence(
    peer: Peer, answer: bytes, error: type[NonstopError], message: str
) -> None:
    peer.answer = answer
    with pytest.raises(error) as caught:
        AgentClient(peer.paths).call("POST", "/v1/command", {"command": "promote"})
    assert type(caught.value) is error
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 OK\r\n", ok(b'{"a": 1}')[:-3]],
    ids=["nothing", "head-cut", "body-cut"],
)
def test_a_connection_closed_early_is_named(peer: Peer, answer: bytes) -> None:
    peer.answer = answer
    with pytest.raises(AgentUnavailable) as caught:
        AgentClient(peer.paths).call("GET", "/v1/status")
    assert str(caught.value) == (
        f"cannot reach the agent at {peer.paths.socket}: it closed the connection; "
        "is it running? (`nonstop up`)"
    )


def test_an_agent_that_never_answers_times_out(peer: Peer) -> None:
    peer.hang = True
    with pytest.raises(AgentUnavailable, match=r"^the agent did not answer within 0.2s$"):
        AgentClient(peer.paths, timeout=0.2).call("GET", "/v1/status")


def test_the_request_carries_token_body_and_an_encoded_target(peer: Peer) -> None:
    peer.answer = ok(b"{}")
    AgentClient(peer.paths).call("POST", "/v1/flags/new flag/é?x=a b", {"percent": 5})
    [request] = peer.received
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/flags/new%20flag/%C3%A9?x=a%20b HTTP/1.1"
    assert {"Authorization: Bearer secret", "Connection: close", "Content-Length: 14"} <= set(lines)
    assert "Content-Type: application/json" in lines
    assert body == b'{"percent": 5}'


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v1/status", "/v1/status"),
        ("/v1/flags/a%2Fb", "/v1/flags/a%2Fb"),  # already encoded: kept
        ("/v1/logs?release=v 1", "/v1/logs?release=v%201"),
        ("/v1/x/ü€", "/v1/x/%C3%BC%E2%82%AC"),
        ("/v1/x\r\nEvil: 1", "/v1/x%0D%0AEvil:%201"),  # no header injection
    ],
)
def test_request_target(path: str, target: str) -> None:
    assert request_target(path) == target


def test_async_callers_get_the_same_answer(peer: Peer) -> None:
    peer.answer = ok(b'{"agent": {"pid": 1}}')
    client = AgentClient(peer.paths)
    assert asyncio.run(client.request("GET", "/v1/status")) == {"agent": {"pid": 1}}
    assert asyncio.run(client.aping()) is True


def test_no_agent(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    with pytest.raises(AgentUnavailable, match=r"^no agent is running for .* \(start it with"):
        AgentClient(paths).call("GET", "/v1/status")
    paths.ensure()
    paths.token.write_text("secret")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(paths.socket))  # a socket file nobody listens on (an agent killed with -9)
    stale.close()
    with pytest.raises(AgentUnavailable) as caught:
        AgentClient(paths).call("GET", "/v1/status")
    assert str(caught.value) == (
        f"no agent is running for {tmp_path} (nothing listens on {paths.socket}; "
        "start it with `nonstop up`)"
    )
    assert AgentClient(paths).ping() is False


def test_tcp_refused_names_the_address(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.ensure()
    paths.token.write_text("secret")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AgentUnavailable, match=rf"nothing listens on 127\.0\.0\.1:{port};"):
        AgentClient(paths, tcp=("127.0.0.1", port)).call("GET", "/v1/status")
