"""Webhook delivery in the background: one bounded queue and one worker per ``[[notify]]``.

:meth:`Notifier.notify` is what the engine calls: it only appends to in-memory queues and
returns; it never waits, raises or touches the network, so a slow or dead receiver cannot
slow a rollout. Each worker sends its queue in order, retrying a connection failure, a 5xx,
408 or 429 with exponential backoff and jitter (``retries``, ``backoff``, ``max_backoff``);
a receiver that still fails is an event (a warning), never an error.

Deliveries live as long as the agent: a full queue drops its oldest notice (counted and said
in an event), and at shutdown the workers get :data:`SHUTDOWN_GRACE` seconds to send what is
queued; anything left is lost and said so (the event log keeps every transition anyway;
docs/decisions/0480-notifications-live-with-the-agent.md).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from nonstop.config.load import resolve
from nonstop.config.schema import NotifyConfig
from nonstop.engine.health import describe
from nonstop.notify.notices import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notice,
    render,
    retry_delay,
    retryable,
    sign,
)

QUEUE_SIZE = 256
"""Notices waiting per receiver; past that the oldest is dropped (a receiver down for hours
must not grow the agent's memory)."""
SHUTDOWN_GRACE = 2.0
"""Seconds a stopping agent gives the workers to send what is queued."""

Emit = Callable[[str, str], None]


class Failed(Exception):
    """One attempt failed; ``retry`` says whether another may succeed."""

    def __init__(self, why: str, *, retry: bool) -> None:
        super().__init__(why)
        self.retry = retry


@dataclass
class Target:
    """One receiver as the worker uses it (secrets and header values resolved)."""

    config: NotifyConfig
    name: str
    secret: str | None
    headers: dict[str, str]
    queue: collections.deque[Notice] = field(default_factory=collections.deque)
    """Notices waiting to be sent (not the one being sent: ``sending``)."""
    sending: Notice | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    """Notices by result: delivered, failed (gave up), dropped (queue full, or the agent
    stopped first); and ``retried``: attempts that failed and were tried again."""

    @classmethod
    def of(cls, config: NotifyConfig, index: int) -> Target:
        where = f"notify[{index}]"
        secret = resolve(config.secret, f"{where}.secret") if config.secret else None
        headers = {k: resolve(v, f"{where}.headers.{k}") for k, v in config.headers.items()}
        return cls(config, redact(config.url), secret, headers)


def redact(url: str) -> str:
    """The URL as events show it: scheme, host and path only (Slack puts its secret in the
    path, so only the first path segment is kept)."""
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    host = host.rpartition("@")[2]
    first = path.split("/", 1)[0].split("?", 1)[0]
    more = "/..." if "/" in path or "?" in path else ""
    return f"{scheme}://{host}/{first}{more}" if path else f"{scheme}://{host}"


class Notifier:
    def __init__(
        self, configs: Sequence[NotifyConfig], app: str, emit: Emit, queue_size: int = QUEUE_SIZE
    ) -> None:
        self.queue_size = queue_size
        self.targets = [Target.of(c, i) for i, c in enumerate(configs)]
        self.app = app
        self.emit = emit
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self.random = random.random

    def notify(self, notice: Notice) -> None:
        """Queue ``notice`` for every receiver that wants its kind; returns at once."""
        for target in self.targets:
            if notice.kind not in target.config.events:
                continue
            if len(target.queue) >= self.queue_size:
                target.queue.popleft()
                target.counts["dropped"] += 1
                if target.counts["dropped"] == 1 or target.counts["dropped"] % 100 == 0:
                    self.emit(
                        "warning",
                        f"notify {target.name}: queue full, dropped the oldest notice "
                        f"({target.counts['dropped']} so far)",
                    )
            target.queue.append(notice)
            target.ready.set()

    def start(self) -> None:
        if not self.targets:
            return
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._work(t)) for t in self.targets]

    async def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Give queued notices ``grace`` seconds, then stop; what is left is counted as lost."""
        self._closing = True
        for target in self.targets:
            target.ready.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for target in self.targets:
            lost = len(target.queue) + (target.sending is not None)
            if lost:
                target.counts["dropped"] += lost
                self.emit("warning", f"notify {target.name}: {lost} not sent (the agent stopped)")
                target.queue.clear()
        if self._session is not None:
            await self._session.close()

    async def _work(self, target: Target) -> None:
        while True:
            if not target.queue:
                if self._closing:
                    return
                target.ready.clear()
                await target.ready.wait()
                continue
            notice = target.sending = target.queue.popleft()
            try:
                await self._deliver(target, notice)
            except Exception as exc:  # a defect must not end the worker (invariant 8)
                target.counts["failed"] += 1
                self.emit("warning", f"notify {target.name}: {notice.kind}: {describe(exc)}")
            target.sending = None

    async def _deliver(self, target: Target, notice: Notice) -> None:
        """Send one notice, retrying; a final failure is a warning event. Never raises."""
        config = target.config
        body = render(notice, self.app, config.format)
        delivery = str(uuid.uuid4())  # the same on every retry: receivers can deduplicate
        for attempt in range(config.retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(config, attempt))
            try:
                await self._post(target, body, delivery, notice.kind)
            except Failed as exc:
                if exc.retry and attempt < config.retries and not self._closing:
                    target.counts["retried"] += 1
                    continue
                target.counts["failed"] += 1
                self.emit(
                    "warning",
                    f"notify {target.name}: {notice.kind} not delivered after "
                    f"{attempt + 1} attempt{'s' if attempt else ''}: {exc}",
                )
                return
            target.counts["delivered"] += 1
            return

    def _delay(self, config: NotifyConfig, attempt: int) -> float:
        return retry_delay(attempt, float(config.backoff), float(config.max_backoff), self.random())

    async def _post(self, target: Target, body: bytes, delivery: str, kind: str) -> None:
        assert self._session is not None
        stamp = str(int(time.time()))
        headers = {
            **target.headers,
            "Content-Type": "application/json",
            "User-Agent": "nonstop-notify",
            "X-Nonstop-Event": kind,
            "X-Nonstop-Delivery": delivery,
            TIMESTAMP_HEADER: stamp,
        }
        if target.secret is not None:
            headers[SIGNATURE_HEADER] = sign(target.secret, stamp, body)
        timeout = aiohttp.ClientTimeout(total=float(target.config.timeout))
        try:
            async with self._session.post(
                target.config.url, data=body, headers=headers, timeout=timeout
            ) as response:
                if response.status < 300:
                    return
                raise Failed(f"HTTP {response.status}", retry=retryable(response.status))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Failed(describe(exc) or type(exc).__name__, retry=True) from exc

    async def test(self, notice: Notice) -> list[tuple[str, str]]:
        """Send ``notice`` once to every receiver, whatever its ``events``, now: ``(receiver,
        "")`` when it took it, else ``(receiver, why)`` (``nonstop notify test``)."""
        results = []
        async with aiohttp.ClientSession() as self._session:
            for target in self.targets:
                body = render(notice, self.app, target.config.format)
                try:
                    await self._post(target, body, str(uuid.uuid4()), notice.kind)
                except Failed as exc:
                    results.append((target.name, str(exc)))
                else:
                    results.append((target.name, ""))
        self._session = None
        return results

    def counts(self) -> list[tuple[str, str, int]]:
        """``(receiver, result, count)`` for /metrics."""
        return [
            (t.name, result, t.counts[result])
            for t in self.targets
            for result in ("delivered", "retried", "failed", "dropped")
        ]
