"""The sample app's WebSocket endpoint: the server side of RFC 6455, standard library only.

Just what a long-lived connection through a deploy needs: the opening handshake (section 4.2),
unfragmented text frames out, any frame in (masked, as clients must send them), ping -> pong,
and the closing handshake (section 5.5.1). Fragmented and binary messages are read and echoed as
they come; extensions and subprotocols are not negotiated.

A connection says hello first: ``{"type": "hello", "release": ..., "instance": ...}``, so a
client knows which release it landed on; every text message is echoed back. When the app stops
(SIGTERM), :meth:`Connections.close_all` sends each client close code 1001 (going away) with
the reason ``reconnect-after-ms=N``, N drawn at random in ``[0, window)``: clients that honour
the hint come back spread over the window instead of all at once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from io import BufferedIOBase

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 section 1.3: appended to the client's key to prove the server read the handshake."""
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
GOING_AWAY = 1001
MAX_PAYLOAD = 1 << 20
"""Frames above 1 MiB are refused (close 1009): this is a sample, not a file transfer."""
CLOSE_WAIT = 2.0
"""Seconds a closing connection waits for the client's close frame before dropping it."""


def accept_key(client_key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``client_key`` (RFC 6455's own example):

    >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
    's3pPLMBiTxaQ9kK+xcOo/YGzPWo='
    """
    digest = hashlib.sha1((client_key + GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def encode_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final, unmasked frame (servers never mask), with the 7/16/64-bit length forms.

    >>> encode_frame(TEXT, b"hi")
    b'\\x81\\x02hi'
    >>> encode_frame(CLOSE, close_payload(1001, "bye"))[:4]
    b'\\x88\\x05\\x03\\xe9'
    """
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        return head + bytes([size]) + payload
    if size < 1 << 16:
        return head + bytes([126]) + struct.pack("!H", size) + payload
    return head + bytes([127]) + struct.pack("!Q", size) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's body: the code (2 bytes) and a UTF-8 reason cut to fit 125 bytes."""
    return struct.pack("!H", code) + reason.encode()[:123]


def read_frame(stream: BufferedIOBase) -> tuple[int, bytes]:
    """(opcode, unmasked payload) of the next frame; EOFError when the peer closed the TCP
    connection, ValueError for a frame this endpoint refuses (too large)."""
    head = _exact(stream, 2)
    opcode, masked, size = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", _exact(stream, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", _exact(stream, 8))[0]
    if size > MAX_PAYLOAD:
        raise ValueError(f"frame of {size} bytes")
    mask = _exact(stream, 4) if masked else b""
    data = _exact(stream, size)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return opcode, data


def _exact(stream: BufferedIOBase, n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) < n:
        raise EOFError("connection closed")
    return data


class Connection:
    """One open WebSocket: writes from any thread (one at a time), reads on its own thread."""

    def __init__(self, sock: socket.socket, rfile: BufferedIOBase) -> None:
        self.sock = sock
        self.rfile = rfile
        self._write = threading.Lock()
        self.closing = threading.Event()

    def send(self, opcode: int, payload: bytes = b"") -> None:
        with self._write:
            self.sock.sendall(encode_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self.send(TEXT, text.encode())

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake (once); the reader ends when the client answers, or the
        socket is dropped after :data:`CLOSE_WAIT` seconds."""
        if self.closing.is_set():
            return
        self.closing.set()
        try:
            self.send(CLOSE, close_payload(code, reason))
        except OSError:
            return
        timer = threading.Timer(CLOSE_WAIT, self._drop)
        timer.daemon = True
        timer.start()

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def serve(self) -> None:
        """Echo text and binary messages, answer pings, finish the closing handshake."""
        while True:
            try:
                opcode, data = read_frame(self.rfile)
            except ValueError:
                self.close(1009, "message too big")
                continue
            except (EOFError, OSError):
                return
            if opcode == CLOSE:
                if not self.closing.is_set():  # the client closes first: echo its code
                    self.closing.set()
                    code = data[:2] if len(data) >= 2 else b""
                    self._reply(CLOSE, code)
                return
            if opcode == PING:
                self._reply(PONG, data)
            elif opcode in (TEXT, BINARY, CONTINUATION) and not self.closing.is_set():
                self._reply(opcode, data)

    def _reply(self, opcode: int, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.send(opcode, data)


class Connections:
    """Every open WebSocket of the app, so a stop can close them all."""

    def __init__(self, window: float, rng: Callable[[], float] = random.random) -> None:
        self.window = window
        """Seconds over which the reconnect hints of one stop are spread."""
        self._rng = rng
        self._lock = threading.Lock()
        self._open: set[Connection] = set()

    def add(self, connection: Connection) -> None:
        with self._lock:
            self._open.add(connection)

    def remove(self, connection: Connection) -> None:
        with self._lock:
            self._open.discard(connection)

    def count(self) -> int:
        with self._lock:
            return len(self._open)

    def hint(self) -> str:
        """``reconnect-after-ms=N``: when this client should come back, spread over the window."""
        return f"reconnect-after-ms={round(self._rng() * self.window * 1000)}"

    def close_all(self) -> int:
        """Close every connection with 1001 and a reconnect hint; returns how many."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            connection.close(GOING_AWAY, self.hint())
        return len(connections)


def hello(release: str, instance: str) -> str:
    return json.dumps(
        {"type": "hello", "release": release, "instance": instance, "ts": time.time()}
    )
