"""HAProxy's request log as a stream of RequestEvents, read from a ring over the admin socket.

HAProxy writes one line per finished request into an in-memory ring (``log ring@...``); the
agent holds one admin-socket connection with ``show events <ring> -w`` open, which sends every
new line as it is written. HAProxy never waits for the reader: a reader that falls more than
the ring (4 MB, ~50,000 lines) behind loses the oldest lines, and the requests never slow down.

Why not a unix datagram socket: Linux queues at most ``net.unix.max_dgram_qlen`` datagrams
(10 by default) on one, and HAProxy drops a line when the queue is full; at a few thousand
requests/s that lost about one event in six in our measurement (docs/router-haproxy.md).

Which lines are read: after ``mark_fresh()`` (a HAProxy the driver just started) the next
connection reads the ring from its beginning, so a request served before the reader connected
is not missed; otherwise (adopting a HAProxy, or reconnecting) only lines written from then on
(``-n``), so no line is read twice. Parsed events go to the bounded request-event queue
(events.py); a line that is not a finished request (a client that gave up before any status)
counts as malformed.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from nonstop.drivers.router.events import EventQueue
from nonstop.drivers.router.haproxy_config import RING, parse_log_line

MAX_LINE = 64 * 1024
RECONNECT_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.5)
"""Seconds between attempts to reach the admin socket (the last one repeats)."""


class RingReader:
    """Follows the ring through ``admin_socket`` from :meth:`start` until :meth:`close`."""

    def __init__(self, admin_socket: Path, queue: EventQueue) -> None:
        self.admin_socket = admin_socket
        self.queue = queue
        self._task: asyncio.Task[None] | None = None
        self._from_start = False

    def mark_fresh(self) -> None:
        """The HAProxy behind the socket is (about to be) a new one: read its whole ring."""
        self._from_start = True

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _follow(self) -> None:
        attempt = 0
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(
                    str(self.admin_socket), limit=MAX_LINE
                )
            except OSError:
                await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
                attempt += 1
                continue
            attempt = 0
            try:
                await self._read(reader, writer)
            except (OSError, ValueError):  # HAProxy went away, or a line over MAX_LINE
                pass
            finally:
                writer.close()
            await asyncio.sleep(RECONNECT_DELAYS[0])

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = f"show events {RING} -w" + ("" if self._from_start else " -n")
        self._from_start = False
        writer.write(command.encode() + b"\n")
        await writer.drain()
        self.queue.counters.connections += 1
        while line := await reader.readline():
            if line.strip():
                self.queue.feed(parse_log_line(line))
