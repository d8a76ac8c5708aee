"""nginx's request log as RequestEvents: one syslog datagram per request on a unix socket.

nginx's ``access_log syslog:server=unix:PATH`` sends each line as one datagram, without waiting:
when the socket's queue is full (Linux holds ``net.unix.max_dgram_qlen`` datagrams, 10 by
default) the line is lost, never the request's time. The reader takes datagrams off the socket
as fast as the event loop lets it and feeds the bounded request-event queue (events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from nonstop.drivers.router.events import EventQueue
from nonstop.drivers.router.nginx_config import parse_log_line

RECEIVE_BUFFER = 4 * 1024 * 1024


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, queue: EventQueue) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.feed(parse_log_line(data))


class SyslogListener:
    """Binds ``path`` (mode 0600) for nginx's syslog writer until :meth:`close`."""

    def __init__(self, path: Path, queue: EventQueue) -> None:
        self.path = path
        self.queue = queue
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
            self.path.chmod(0o600)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self.queue), sock=sock)
        self._transport = transport

    async def close(self) -> None:
        if self._transport is None:
            return
        transport, self._transport = self._transport, None
        transport.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
