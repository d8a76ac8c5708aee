"""HAProxy's request log as a stream of RequestEvents, over a unix datagram socket.

HAProxy sends one datagram per finished request (``log <socket> format raw``) to a socket this
listener binds. Datagrams never block HAProxy: when nobody is bound (the agent is restarting) or
the socket buffer is full, HAProxy drops the line and carries on serving. The socket path is
fixed per state dir, so a new agent binding it again gets the lines of the HAProxy it adopted.
Parsed events go to a bounded queue; when the consumer falls behind, new events are dropped and
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from nonstop.drivers.router.base import RequestEvent
from nonstop.drivers.router.haproxy_config import parse_log_line

RECEIVE_BUFFER = 4 * 1024 * 1024
"""Bytes the kernel may hold for us: about 50,000 log lines of ~80 bytes while the loop is busy."""


@dataclass(slots=True)
class LogCounters:
    received: int = 0
    """Events parsed and queued."""
    dropped: int = 0
    """Events parsed but dropped because the queue was full (consumer too slow)."""
    ignored: int = 0
    """Datagrams that were not a finished request (HAProxy notices, client aborts)."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: LogListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: object) -> None:
        event = parse_log_line(data)
        if event is None:
            self.listener.counters.ignored += 1
        else:
            self.listener.offer(event)


class LogListener:
    """Binds ``path`` (mode 0600) for HAProxy's log; :meth:`events` yields what arrives."""

    def __init__(self, path: Path, *, queue_size: int = 10_000) -> None:
        self.path = path
        self.counters = LogCounters()
        self._queue: asyncio.Queue[RequestEvent] = asyncio.Queue(maxsize=queue_size)
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        if self._transport is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind(str(self.path))
            # 0600: no other user can inject events (the state dir guards the moment before).
            self.path.chmod(0o600)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self._transport = transport

    async def close(self) -> None:
        if self._transport is None:
            return
        transport, self._transport = self._transport, None
        transport.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def offer(self, event: RequestEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.counters.dropped += 1
        else:
            self.counters.received += 1

    async def events(self) -> AsyncIterator[RequestEvent]:
        while True:
            yield await self._queue.get()
