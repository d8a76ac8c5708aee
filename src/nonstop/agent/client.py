"""Client of the agent's HTTP API (its unix socket, or its loopback TCP listener), used by the CLI.

It speaks HTTP/1.1 with the standard library's ``socket`` alone: one request per connection
(``Connection: close``), the answer read until its length is complete. Every API answer is one
small JSON document, so nothing here streams. aiohttp (~0.1 s to import) and ``http.client``
(which imports ``ssl`` and ``email``) would cost a command like ``nonstop status`` more than
all its own work (decision 0440).

Whatever the agent answers, a caller gets data or a NonstopError with a sentence a user can
act on: never a decoding traceback, never an internal class name."""

from __future__ import annotations

import errno
import json
import socket
import time
from typing import Any

from nonstop.agent.paths import Paths
from nonstop.errors import AgentUnavailable, NonstopError, StateError, UsageError

MAX_ANSWER = 256 * 1024 * 1024
"""Bytes of one answer at most (a flags document or `logs` of many instances is a few MiB)."""


class Disconnected(ConnectionError):
    """The agent closed the connection before its answer was complete."""


class AgentClient:
    def __init__(
        self, paths: Paths, *, timeout: float = 30.0, tcp: tuple[str, int] | None = None
    ) -> None:
        """``tcp``: the agent's ``[agent] listen`` address, else its unix socket."""
        self.paths = paths
        self.timeout = timeout
        self.tcp = tcp

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; raises NonstopError subclasses with the agent's message
        (409 -> StateError, 400 -> UsageError, unreachable -> AgentUnavailable)."""
        token = self.paths.read_token()
        if token is None or (self.tcp is None and not self.paths.socket.exists()):
            raise AgentUnavailable(
                f"no agent is running for {self.paths.project} (start it with `nonstop up`)"
            )
        try:
            status, raw = self._exchange(encode_request(method, path, body, token))
        except TimeoutError as exc:
            raise AgentUnavailable(f"the agent did not answer within {self.timeout:g}s") from exc
        except OSError as exc:
            raise AgentUnavailable(unreachable(self.paths, exc, self.tcp)) from exc
        return decode(status, raw)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """:meth:`call` for asyncio code, in a worker thread."""
        import asyncio

        return await asyncio.to_thread(self.call, method, path, body)

    def ping(self) -> bool:
        try:
            self.call("GET", "/v1/status")
        except NonstopError:
            return False
        return True

    async def aping(self) -> bool:
        import asyncio

        return await asyncio.to_thread(self.ping)

    def _exchange(self, request: bytes) -> tuple[int, bytes]:
        deadline = time.monotonic() + self.timeout
        with self._connect() as sock:
            sock.sendall(request)
            return read_response(sock, deadline)

    def _connect(self) -> socket.socket:
        if self.tcp is not None:
            return socket.create_connection(self.tcp, timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.paths.socket))
        except BaseException:
            sock.close()
            raise
        return sock


def encode_request(method: str, path: str, body: Any, token: str) -> bytes:
    """The bytes of one HTTP/1.1 request with a JSON body (when ``body`` is not None)."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = [
        f"{method} {request_target(path)} HTTP/1.1",
        "Host: agent",
        f"Authorization: Bearer {token}",
        "Accept: application/json",
        "Connection: close",
        f"Content-Length: {len(payload)}",
    ]
    if body is not None:
        head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def request_target(path: str) -> str:
    """``path`` with spaces, controls and non-ASCII percent-encoded as UTF-8 (what a browser
    or aiohttp sends); anything already encoded is kept."""
    return "".join(
        char if "!" <= char <= "~" else "".join(f"%{b:02X}" for b in char.encode()) for char in path
    )


def read_response(sock: socket.socket, deadline: float) -> tuple[int, bytes]:
    """Status and body of the answer on ``sock``: ``Content-Length`` bytes, or (chunked or
    unsized) everything until the agent closes the connection."""
    buffer = bytearray()
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        _receive(sock, buffer, deadline, eof_ok=False)
    status, headers = parse_head(bytes(buffer[:end]))
    body = buffer[end + 4 :]
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        while len(body) < int(length):
            _receive(sock, body, deadline, eof_ok=False)
        return status, bytes(body[: int(length)])
    while _receive(sock, body, deadline, eof_ok=True):
        pass
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, dechunk(bytes(body))
    return status, bytes(body)


def _receive(sock: socket.socket, buffer: bytearray, deadline: float, *, eof_ok: bool) -> bool:
    """Append what arrives to ``buffer``; False at the end of the stream (when allowed)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)
    data = sock.recv(65536)
    if not data and not eof_ok:
        raise Disconnected
    if len(buffer) + len(data) > MAX_ANSWER:
        raise NonstopError(f"the agent's answer is larger than {MAX_ANSWER} bytes")
    buffer += data
    return bool(data)


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """``HTTP/1.1 200 OK`` and its header lines: the status and the headers (names lower case)."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        snippet = " ".join(status_line.split())[:200]
        raise NonstopError(f"the agent answered with something that is not HTTP: {snippet!r}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def dechunk(data: bytes) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` answer."""
    pieces: list[bytes] = []
    pos = 0
    try:
        while True:
            line_end = data.index(b"\r\n", pos)
            size = int(data[pos:line_end].split(b";")[0], 16)
            if size == 0:
                return b"".join(pieces)
            start = line_end + 2
            if start + size > len(data):
                raise ValueError("chunk cut short")
            pieces.append(data[start : start + size])
            pos = start + size + 2
    except ValueError:
        raise NonstopError("the agent's answer was cut short (chunked body incomplete)") from None


def unreachable(paths: Paths, exc: BaseException, tcp: tuple[str, int] | None = None) -> str:
    """Why the socket did not answer, in words (no exception class names)."""
    where = f"{tcp[0]}:{tcp[1]}" if tcp else str(paths.socket)
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
        return (
            f"no agent is running for {paths.project} (nothing listens on {where}; "
            "start it with `nonstop up`)"
        )
    if isinstance(exc, Disconnected):
        why = "it closed the connection"
    elif isinstance(exc, OSError) and exc.strerror:
        why = exc.strerror.lower()
    else:
        why = str(exc) or "the connection failed"
    return f"cannot reach the agent at {where}: {why}; is it running? (`nonstop up`)"


def decode(status: int, raw: bytes) -> Any:
    """The agent's answer as data, or the error it reports."""
    text = raw.decode(errors="replace")
    try:
        data = json.loads(text) if text.strip() else None
    except (json.JSONDecodeError, RecursionError):
        snippet = " ".join(text.split())[:200]
        raise NonstopError(
            f"the agent answered {status} with something that is not JSON: {snippet!r}"
        ) from None
    if status >= 400:
        message = data.get("error") if isinstance(data, dict) else None
        message = str(message) if message else (text.strip()[:200] or "no message")
        if status == 409:
            raise StateError(message)
        if status in (400, 404, 413, 422):
            raise UsageError(message)
        raise NonstopError(f"the agent failed (HTTP {status}): {message}")
    return data
