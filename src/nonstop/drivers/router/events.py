"""The request-event queue every router's reader feeds: bounded, counted.

A reader (Caddy's access-log socket, HAProxy's ring, nginx's syslog socket) parses what its
router writes and ``offer``s the events; the agent consumes ``events()``. When the consumer falls
behind, new events are dropped and counted rather than letting the router's writes back up: a
router must never slow down user requests for the sake of its log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nonstop.drivers.router.base import RequestEvent


@dataclass(slots=True)
class StreamCounters:
    received: int = 0
    """Events parsed and queued."""
    dropped: int = 0
    """Events parsed but dropped because the queue was full (consumer too slow)."""
    malformed: int = 0
    """Lines that were not a finished request (unparsable, or a client that gave up first)."""
    connections: int = 0
    """Connections between the router and the reader (1 + one per router restart)."""


class EventQueue:
    def __init__(self, size: int = 10_000) -> None:
        self.counters = StreamCounters()
        self._queue: asyncio.Queue[RequestEvent] = asyncio.Queue(maxsize=size)

    def offer(self, event: RequestEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.counters.dropped += 1
        else:
            self.counters.received += 1

    def feed(self, event: RequestEvent | None) -> None:
        """One parsed line: an event to offer, or None for a line that was not one."""
        if event is None:
            self.counters.malformed += 1
        else:
            self.offer(event)

    async def events(self) -> AsyncIterator[RequestEvent]:
        while True:
            yield await self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()
