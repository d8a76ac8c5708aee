"""WebSocket clients held open through a deploy: ``nonstop verify --websockets N``.

Each of N clients connects, learns which release it landed on (the sample app's hello message
``{"type": "hello", "release": ..., "instance": ...}``; otherwise the handshake response's
release header), and waits. When the connection ends the client records how (close code and
reason, or an abrupt end: no close frame, a reset) and comes back: after the server's hint when
the close reason carries ``reconnect-after-ms=N``, else after a jittered exponential backoff
(uniform in ``[0, min(backoff_max, backoff * 2**failures))``), so clients spread out instead of
arriving together. The report says, per client and in total, how each connection ended, how
long clients were disconnected, how spread out the reconnects were, and which release each
client ended on.

    holder = WebSocketHolder("ws://127.0.0.1:8080/ws", clients=50)
    await holder.start()
    await holder.wait_all_on({"v1"}, timeout=10)
    ...                                  # deploy v2
    report = await holder.stop()
    assert report.abrupt == [], report.verdict()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from errno import errorcode
from typing import Any

import aiohttp

from nonstop.errors import UsageError

HINT = re.compile(r"reconnect-after-ms=(\d+)")
ABNORMAL = 1006
"""RFC 6455 7.1.5: the code a client reports when the connection ended without a close frame."""
_M = aiohttp.WSMsgType
_DATA = frozenset({_M.TEXT, _M.BINARY, _M.PING, _M.PONG})
"""Messages that leave the connection open."""
UNKNOWN = "(unknown)"
DISCONNECTED = "(disconnected)"


def reconnect_hint(reason: str) -> float | None:
    """Seconds the server asked the client to wait: ``"reconnect-after-ms=250"`` -> 0.25."""
    match = HINT.search(reason or "")
    return int(match.group(1)) / 1000 if match else None


def backoff_delay(failures: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in ``[0, min(cap, base * 2**failures))``.

    >>> backoff_delay(0, 0.5, 5.0, lambda: 0.5), backoff_delay(3, 0.5, 5.0, lambda: 0.5)
    (0.25, 2.0)
    >>> backoff_delay(10, 0.5, 5.0, lambda: 1.0)
    5.0
    """
    return float(rng() * min(cap, base * 2.0 ** min(failures, 30)))


@dataclass(slots=True)
class Connection:
    """One connection's life, times in seconds since the holder started."""

    client: int
    opened: float
    release: str = UNKNOWN
    instance: str | None = None
    closed: float | None = None
    code: int | None = None
    reason: str = ""
    abrupt: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "opened": round(self.opened, 3),
            "release": self.release,
            "instance": self.instance,
            "closed": None if self.closed is None else round(self.closed, 3),
            "code": self.code,
            "reason": self.reason,
            "abrupt": self.abrupt,
            "error": self.error,
        }


@dataclass(slots=True)
class ClientState:
    index: int
    current: Connection | None = None
    history: list[Connection] = field(default_factory=list)
    disconnected_at: float | None = None
    failures: int = 0


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    backoff: float = 0.5
    """Seconds: the first reconnect without a hint waits uniform [0, backoff)."""
    backoff_max: float = 5.0
    connect_timeout: float = 5.0
    heartbeat: float = 15.0
    """Seconds between the client's pings (keeps idle tunnels open through router timeouts)."""
    release_header: str = "X-Release"


class WebSocketHolder:
    """N WebSocket clients that reconnect on close; see the module docstring."""

    def __init__(
        self,
        url: str,
        clients: int,
        settings: WebSocketSettings | None = None,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if clients < 1:
            raise UsageError(f"--websockets: expected a number of connections >= 1, got {clients}")
        self.url = url
        self.settings = settings or WebSocketSettings()
        self.rng = rng
        self.clients = [ClientState(i) for i in range(clients)]
        self.connect_failures: Counter[str] = Counter()
        self._t0 = time.monotonic()
        self._stopping = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self.gaps: list[tuple[float, float]] = []
        """(disconnected at, seconds disconnected) of every reconnect."""

    def now(self) -> float:
        return time.monotonic() - self._t0

    async def start(self) -> None:
        self._t0 = time.monotonic()
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        # Bounded connects; no total timeout: a held connection lives as long as the run.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.settings.connect_timeout)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        self._tasks = [asyncio.create_task(self._client(c)) for c in self.clients]

    def snapshot(self) -> Counter[str]:
        """Open connections per release right now."""
        return Counter(c.current.release for c in self.clients if c.current is not None)

    async def wait_all_on(self, releases: Collection[str], timeout: float) -> bool:
        """Wait until every client is connected to one of ``releases``; False at ``timeout``."""
        return await self._wait(lambda s: sum(s[r] for r in releases) == len(self.clients), timeout)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until every client is connected, to any release; False at ``timeout``."""
        return await self._wait(lambda s: s.total() == len(self.clients), timeout)

    async def _wait(self, done: Callable[[Counter[str]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done(self.snapshot()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return True

    async def stop(self, died: Collection[str] = ()) -> WebSocketReport:
        """Close every client (code 1000, not counted as a closure) and report; abrupt closures
        on an instance in ``died`` (killed, crashed) are excused in the verdict."""
        ended = {c.index: (c.current.release if c.current else DISCONNECTED) for c in self.clients}
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        return WebSocketReport.build(self, ended, set(died))

    # -- one client ------------------------------------------------------------------------

    async def _client(self, state: ClientState) -> None:
        assert self._session is not None
        while not self._stopping.is_set():
            delay = await self._connect_once(self._session, state)
            await asyncio.sleep(delay)

    async def _connect_once(self, session: aiohttp.ClientSession, state: ClientState) -> float:
        """One connection from handshake to end; returns how long to wait before the next."""
        s = self.settings
        try:
            ws = await session.ws_connect(
                self.url,
                heartbeat=s.heartbeat,
                timeout=aiohttp.ClientWSTimeout(ws_close=s.connect_timeout),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.connect_failures[_describe(exc)] += 1
            state.failures += 1
            return backoff_delay(state.failures, s.backoff, s.backoff_max, self.rng)
        state.failures = 0
        # The handshake's response (aiohttp keeps it, unexported): its release header.
        headers = ws._response.headers
        connection = Connection(
            state.index, self.now(), release=headers.get(s.release_header, UNKNOWN)
        )
        async with ws:
            await self._opened(state, connection, ws)
            await self._hold(connection, ws)
        return self._after_close(state, connection)

    async def _opened(
        self, state: ClientState, connection: Connection, ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        with contextlib.suppress(TimeoutError):  # an app without a hello: the header says
            first = await ws.receive(timeout=1.0)
            if first.type == aiohttp.WSMsgType.TEXT:
                _read_hello(connection, first.data)
            elif first.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                self._closed(connection, first, ws)
        state.current = connection
        state.history.append(connection)
        if state.disconnected_at is not None:
            connection_gap = connection.opened - state.disconnected_at
            self.gaps.append((state.disconnected_at, connection_gap))
        self._changed.set()

    async def _hold(self, connection: Connection, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Read until the connection ends (messages after the hello are not looked at)."""
        while connection.closed is None:
            msg = await ws.receive()
            if msg.type not in _DATA:
                self._closed(connection, msg, ws)

    def _closed(
        self, connection: Connection, msg: aiohttp.WSMessage, ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        connection.closed = self.now()
        if msg.type == aiohttp.WSMsgType.CLOSE:
            connection.code, connection.reason = int(msg.data), str(msg.extra or "")
            return
        connection.abrupt = True
        connection.code = ws.close_code or ABNORMAL
        error = ws.exception() or (msg.data if isinstance(msg.data, BaseException) else None)
        connection.error = _describe(error) if error else "closed without a close frame"

    def _after_close(self, state: ClientState, connection: Connection) -> float:
        state.current = None
        state.disconnected_at = connection.closed
        self._changed.set()
        hint = reconnect_hint(connection.reason)
        if hint is not None:
            return hint
        s = self.settings
        return backoff_delay(state.failures, s.backoff, s.backoff_max, self.rng)


def _read_hello(connection: Connection, data: str) -> None:
    try:
        hello = json.loads(data)
    except ValueError:
        return
    if isinstance(hello, dict) and hello.get("type") == "hello":
        connection.release = str(hello.get("release") or connection.release)
        instance = hello.get("instance")
        connection.instance = str(instance) if instance is not None else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"handshake answered {exc.status}"
    errno = getattr(exc, "errno", None) or getattr(getattr(exc, "os_error", None), "errno", None)
    name = type(exc).__name__
    return f"{name}({errorcode.get(errno, errno)})" if errno else name


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values. ``percentile([1, 2, 3, 4], 0.5)`` -> 2."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


def peak_in_window(times: list[float], window: float) -> int:
    """Most events within any ``window`` seconds: ``peak_in_window([0, .05, .3], .1)`` -> 2."""
    ordered, best, first = sorted(times), 0, 0
    for last, t in enumerate(ordered):
        while t - ordered[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


@dataclass(frozen=True, slots=True)
class WebSocketReport:
    url: str
    clients: int
    connections: list[Connection]
    ended_on: dict[str, int]
    gaps: list[float]
    reconnect_times: list[float]
    connect_failures: dict[str, int]
    died: frozenset[str]

    @classmethod
    def build(
        cls, holder: WebSocketHolder, ended: dict[int, str], died: set[str]
    ) -> WebSocketReport:
        connections = [c for state in holder.clients for c in state.history]
        gaps = holder.gaps
        return cls(
            url=holder.url,
            clients=len(holder.clients),
            connections=sorted(connections, key=lambda c: c.opened),
            ended_on=dict(Counter(ended.values()).most_common()),
            gaps=[g for _, g in gaps],
            reconnect_times=[at + g for at, g in gaps],
            connect_failures=dict(holder.connect_failures),
            died=frozenset(died),
        )

    @property
    def closed(self) -> list[Connection]:
        return [c for c in self.connections if c.closed is not None]

    @property
    def abrupt(self) -> list[Connection]:
        """Abrupt closures that count: not on an instance that died."""
        return [c for c in self.closed if c.abrupt and c.instance not in self.died]

    @property
    def excused(self) -> list[Connection]:
        return [c for c in self.closed if c.abrupt and c.instance in self.died]

    @property
    def close_codes(self) -> dict[str, int]:
        return dict(Counter(str(c.code) for c in self.closed).most_common())

    @property
    def passed(self) -> bool:
        return not self.abrupt and not self.connect_failures

    def verdict(self) -> str:
        problems = []
        if self.abrupt:
            problems.append(f"{len(self.abrupt)} connection(s) ended abruptly (no close frame)")
        if self.connect_failures:
            problems.append(f"{sum(self.connect_failures.values())} connect attempt(s) failed")
        if problems:
            return "FAIL: websockets: " + "; ".join(problems)
        excused = f" ({len(self.excused)} abrupt on instances that died)" if self.excused else ""
        return (
            f"PASS: websockets: {len(self.closed)} closure(s), none abrupt{excused}; "
            f"{self.clients} client(s) ended on " + _counts(self.ended_on)
        )

    def gap_stats(self) -> dict[str, float]:
        return {
            "count": len(self.gaps),
            "p50": round(percentile(self.gaps, 0.5), 3),
            "p99": round(percentile(self.gaps, 0.99), 3),
            "max": round(max(self.gaps, default=0.0), 3),
        }

    def spread(self) -> dict[str, float]:
        times = self.reconnect_times
        return {
            "reconnects": len(times),
            "span_s": round(max(times) - min(times), 3) if times else 0.0,
            "peak_per_100ms": peak_in_window(times, 0.1),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "clients": self.clients,
            "connections": len(self.connections),
            "closures": len(self.closed),
            "close_codes": self.close_codes,
            "abrupt": [c.to_dict() for c in self.abrupt],
            "abrupt_on_died_instances": len(self.excused),
            "died_instances": sorted(self.died),
            "connect_failures": self.connect_failures,
            "disconnected_s": self.gap_stats(),
            "reconnect_spread": self.spread(),
            "ended_on": self.ended_on,
            "closed_by_release": dict(Counter(c.release for c in self.closed)),
            "passed": self.passed,
            "verdict": self.verdict(),
        }


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing"
