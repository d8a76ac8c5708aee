"""Caddy's access log as a stream of RequestEvents.

Caddy's ``net`` log writer dials a unix socket that :class:`AccessLogListener` serves and writes
one JSON object per line. The listener reads as fast as the event loop lets it and hands parsed
events to the bounded request-event queue (events.py) rather than letting the socket fill up,
because Caddy writes the access log on the request's own goroutine and a full socket would slow
down user requests.

An entry, after our encoder drops the request and header fields::

    {"level": "info", "ts": 1795672057.06, "logger": "http.log.access.nonstop",
     "msg": "handled request", "bytes_read": 0, "duration": 0.0016, "size": 7,
     "status": 200, "upstream_status": 200, "upstream": "127.0.0.1:18081"}

becomes ``RequestEvent(ts=1795672057.06, upstream="127.0.0.1:18081", status=200,
duration_ms=1.6)``. ``upstream_status`` is null when no upstream answered (the router's own
502/503/504): then, for a 5xx, ``proxy_error`` is True, and ``upstream`` is still the last
upstream Caddy tried (``{http.reverse_proxy.upstream.hostport}`` is set before each attempt and
kept after a failed dial, reset or timeout), or None when it tried none (an empty pool, or every
upstream marked down): the contract of RequestEvent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from nonstop.drivers.router.base import RequestEvent
from nonstop.drivers.router.events import EventQueue

MAX_LINE = 64 * 1024


def parse_access_entry(line: bytes | str) -> RequestEvent | None:
    """One access-log line -> RequestEvent; None for anything that is not a handled request."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("msg") != "handled request":
        return None
    try:
        status = int(entry["status"])
        ts = float(entry["ts"])
        duration_ms = float(entry.get("duration", 0.0)) * 1000.0
    except (KeyError, TypeError, ValueError):
        return None
    answered = entry.get("upstream_status") not in (None, "")
    hostport = entry.get("upstream")
    upstream = str(hostport) if hostport else None
    return RequestEvent.seen(ts, upstream, status, duration_ms, answered=answered)


class AccessLogListener:
    """Serves ``path`` (mode 0600) for Caddy's net writer; :meth:`events` yields what arrives."""

    def __init__(self, path: Path, queue: EventQueue) -> None:
        self.path = path
        self.queue = queue
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        if self._server is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_LINE
        )
        # 0600: no other user can inject events. Connecting needs write permission, which the
        # usual umask (022) already denies to others in the moment before this chmod; the
        # directory (the agent's state dir, or a 0700 socket dir) guards it as well.
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.queue.counters.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # a line longer than MAX_LINE: skip what was buffered
                    self.queue.feed(None)
                    continue
                if not line:
                    return
                self.queue.feed(parse_access_entry(line))
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()
