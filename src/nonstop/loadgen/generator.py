"""The open-model load generator: requests leave on a fixed schedule, however slow the answers.

One scheduler task walks the schedule (slot ``i`` is due at ``t0 + i / rps``) and creates one
task per slot; it never waits for a response, so a stalled server meets the full arrival rate,
exactly as real users would hit it during a deploy. Every slot ends in exactly one
:class:`~nonstop.loadgen.options.Outcome`:

* a response: ``ok``, ``4xx``, ``5xx`` or ``unexpected`` (status outside ``expect_status``);
* ``transport``: no response (refused, reset, closed early); ``timeout``: none within ``timeout``;
* ``not_sent``: the request could not leave within ``max_lag`` of its due time, because all
  ``connections`` were busy or the event loop fell behind. Waiting longer would hide the stall
  (coordinated omission); dropping it silently would hide the failure. So it is counted.

A request of an idempotent method (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) whose connection was
closed or reset before a single byte of the response arrived is sent once more, on a new
connection, as HTTP allows (RFC 9110 9.2.2) and browsers do: a server that closes an idle
keep-alive connection (a router reloading its config) races the request written on it at that
instant. The retry is never silent: the report's ``retried`` counts each by what happened to the
first attempt (:data:`RETRY_KINDS`), and the request's outcome is that of the retry. aiohttp's own
retry, which may pick another stale connection from the same pool and counts nothing, is off.

The hot path does no logging and allocates little: at 500 rps on a shared core the scheduler
must stay well ahead of the schedule (see benchmarks/bench_loadgen.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import asdict, dataclass
from errno import ECONNRESET, EPIPE, errorcode
from types import SimpleNamespace
from typing import Any, TypedDict, Unpack

import aiohttp

from nonstop.errors import UsageError
from nonstop.loadgen.options import (
    Outcome,
    check_positive,
    check_url,
    classify_status,
    slot_count,
)
from nonstop.loadgen.report import LoadReport, Recorder

MISSING_GROUP = "(missing)"
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
REUSED_CLOSED = "reused connection closed"
NEW_CLOSED = "new connection closed"
CONNECT_RESET = "connect reset"
RETRY_KINDS = (REUSED_CLOSED, NEW_CLOSED, CONNECT_RESET)
"""Why a request was sent twice: its first attempt's connection, kept alive from an earlier
request or opened for it, closed or reset before any response byte; or the connection was reset
while being opened (a connection queued on a listening socket that was closed meanwhile)."""
_BURST = 256
_METHOD = re.compile(r"[A-Za-z]+")


class LoadSettings(TypedDict, total=False):
    """Keyword options of LoadGenerator and run_load; defaults in :class:`Settings`."""

    timeout: float
    connections: int
    method: str
    headers: Mapping[str, str]
    body: bytes | None
    expect_status: Iterable[int] | None
    warmup: float
    max_lag: float
    group_by_header: str | None
    group_by_body: int


@dataclass(frozen=True, slots=True)
class Settings:
    timeout: float = 5.0
    """Seconds from sending a request to the end of its response body."""
    connections: int = 100
    """Requests in flight at most (the connection pool size)."""
    method: str = "GET"
    headers: Mapping[str, str] | None = None
    body: bytes | None = None
    expect_status: Iterable[int] | None = None
    """Statuses that count as ok; None means any 2xx or 3xx."""
    warmup: float = 0.0
    """Seconds of load before the measured window; counted apart, never in the verdict."""
    max_lag: float = 1.0
    """A request not sent within this many seconds of its due time is ``not_sent``."""
    group_by_header: str | None = None
    group_by_body: int = 0
    """Group responses by the first N bytes of their body (0: off)."""

    def check(self) -> Settings:
        check_positive("timeout", self.timeout)
        check_positive("max_lag", self.max_lag)
        if self.connections < 1:
            raise UsageError(f"connections: expected an integer >= 1, got {self.connections}")
        if self.warmup < 0:
            raise UsageError(f"warmup: expected a duration >= 0, got {self.warmup:g}")
        if not _METHOD.fullmatch(self.method):
            raise UsageError(
                f'method: expected an HTTP method such as GET or POST, got "{self.method}"'
            )
        if self.group_by_header and self.group_by_body:
            raise UsageError("group by a header or by a body prefix, not both")
        if self.group_by_body < 0:
            raise UsageError(f"group_by_body: expected a byte count >= 0, got {self.group_by_body}")
        return self


class LoadGenerator:
    """Constant-rate load in the background::

        gen = LoadGenerator("http://127.0.0.1:8080/", rps=200)
        await gen.start()
        ...                      # deploy something
        report = await gen.stop()

    With ``duration`` the schedule ends by itself (``await gen.finished()``); otherwise it runs
    until :meth:`stop`. :meth:`stop` lets requests in flight finish (each is bounded by
    ``max_lag + timeout``) so that every scheduled request has its outcome in the report.
    """

    def __init__(
        self,
        url: str,
        rps: float,
        *,
        duration: float | None = None,
        **options: Unpack[LoadSettings],
    ) -> None:
        self.url = check_url(url)
        self.rps = check_positive("rps", rps)
        if duration is not None:
            check_positive("duration", duration)
        self.duration = duration
        self.settings = Settings(**options).check()
        expected = self.settings.expect_status
        self._expected = frozenset(expected) if expected is not None else None
        self._warmup_slots = slot_count(rps, self.settings.warmup)
        self._last_slot = (
            self._warmup_slots + slot_count(rps, duration) if duration is not None else None
        )
        self._measured = Recorder()
        self._warming = Recorder()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(self.settings.connections)
        self._warmed = asyncio.Event()
        self._t0 = 0.0
        self._started_at = 0.0
        self._stopped_at: float | None = None
        self._report: LoadReport | None = None
        self._complete = False

    async def start(self) -> None:
        """Open the connection pool and start the schedule; slot 0 is due right away."""
        if self._scheduler is not None:
            raise RuntimeError("this LoadGenerator was already started")
        self._session = self._new_session(force_close=False)
        self._fresh = self._new_session(force_close=True)
        loop = asyncio.get_running_loop()
        self._started_at = time.time()
        self._t0 = loop.time()
        if self._warmup_slots == 0:
            self._warmed.set()
        self._scheduler = loop.create_task(self._schedule(loop))

    def _new_session(self, *, force_close: bool) -> aiohttp.ClientSession:
        """The pool (keep-alive) or, with ``force_close``, the new connections retries use."""
        s = self.settings
        trace = aiohttp.TraceConfig()
        trace.on_connection_reuseconn.append(_mark_reused)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=s.connections, limit_per_host=0, force_close=force_close
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=s.timeout),
            headers=dict(s.headers or {}),
            trace_configs=None if force_close else [trace],
        )
        if hasattr(session, "_retry_connection"):
            # aiohttp (3.14) silently resends an idempotent request once, possibly on another
            # pooled connection the same reload closed; _send retries itself, and counts it.
            session._retry_connection = False
        return session

    async def warmed_up(self) -> None:
        """Return once the warmup slots are behind and the measured window has begun."""
        await self._warmed.wait()

    async def finished(self) -> None:
        """Return when the last slot of ``duration`` is scheduled (without one: after stop())."""
        if self._scheduler is None:
            raise RuntimeError("start() the LoadGenerator first")
        await asyncio.wait([self._scheduler])

    async def stop(self) -> LoadReport:
        """End the schedule now, wait for requests in flight, close the pool, return the report."""
        if self._report is not None:
            return self._report
        if self._scheduler is None or self._session is None:
            raise RuntimeError("start() the LoadGenerator first")
        loop = asyncio.get_running_loop()
        self._stopped_at = loop.time()
        # The scheduler only waits in its sleep, between two slots: a slot is either recorded
        # or in flight (and awaited below), or it was never scheduled. None goes missing.
        self._scheduler.cancel()
        await asyncio.wait([self._scheduler])
        error = None if self._scheduler.cancelled() else self._scheduler.exception()
        if error is not None:  # a bug in the scheduler: do not report a run that did not happen
            await self.close()
            raise error
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._close_sessions()
        self._report = self._build_report()
        return self._report

    async def close(self) -> None:
        """Abandon the run (on cancellation or error): cancel everything, report nothing."""
        tasks = [t for t in (self._scheduler, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self._close_sessions()

    async def _close_sessions(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()

    def _build_report(self) -> LoadReport:
        interval = 1 / self.rps
        measure_start = self._t0 + self._warmup_slots * interval
        if self.duration is not None and self._complete:
            end = measure_start + self.duration
        else:
            end = self._stopped_at or measure_start
        s = self.settings
        settings: dict[str, Any] = {
            k: v for k, v in asdict(s).items() if k not in ("headers", "body", "expect_status")
        }
        settings["expect_status"] = sorted(self._expected) if self._expected else None
        settings["started_at"] = round(self._started_at + (measure_start - self._t0), 3)
        return self._measured.report(
            url=str(self.url),
            method=s.method,
            rps=self.rps,
            duration=max(0.0, end - measure_start),
            warmup=self._warming.counts() if self._warmup_slots else None,
            settings=settings,
        )

    async def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        interval, t0, last = 1 / self.rps, self._t0, self._last_slot
        warm, max_lag, rps = self._warmup_slots, self.settings.max_lag, self.rps
        tasks, create_task, clock = self._tasks, loop.create_task, loop.time
        i = burst = 0
        with contextlib.suppress(asyncio.CancelledError):
            while last is None or i < last:
                due = t0 + i * interval
                now = clock()
                if due > now or burst == _BURST:
                    # Catching up never runs more than _BURST slots without letting the
                    # requests (and stop()) run; at 1e6 rps it would otherwise never yield.
                    await asyncio.sleep(max(0.0, due - now))
                    burst = 0
                    continue
                burst += 1
                if i < warm:
                    recorder, second = self._warming, 0
                else:
                    recorder, second = self._measured, int((i - warm) / rps + 1e-9)
                    if i == warm:
                        self._warmed.set()
                i += 1
                if now - due > max_lag:
                    # The loop itself fell this far behind (a blocked event loop, a starved
                    # CPU): sending now would report a latency the schedule never asked for.
                    recorder.record(Outcome.NOT_SENT, second)
                    continue
                task = create_task(self._send(due, second, recorder))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            self._complete = True
        self._warmed.set()

    async def _send(self, due: float, second: int, recorder: Recorder) -> None:
        sem = self._sem
        if sem.locked():
            try:
                async with asyncio.timeout_at(due + self.settings.max_lag):
                    await sem.acquire()
            except TimeoutError:
                recorder.record(Outcome.NOT_SENT, second)
                return
        else:
            await sem.acquire()  # free: returns without yielding
        assert self._session is not None
        assert self._fresh is not None
        s, clock = self.settings, asyncio.get_running_loop().time
        sent = clock()
        status: int | None = None
        group: str | None = None
        error: str | None = None
        retried: str | None = None
        try:
            attempt = _Attempt()
            try:
                status, group = await self._request(self._session, attempt)
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
                retried = _retry_kind(exc, attempt) if s.method.upper() in IDEMPOTENT else None
                if retried is None:
                    raise
                left = aiohttp.ClientTimeout(total=max(0.001, sent + s.timeout - clock()))
                status, group = await self._request(self._fresh, _Attempt(), left)
            outcome = classify_status(status, self._expected)
        except TimeoutError as exc:
            outcome, error = Outcome.TIMEOUT, type(exc).__name__
        except Exception as exc:  # every other failure to get a response is a transport error
            outcome, error = Outcome.TRANSPORT, _error_kind(exc)
        finally:
            sem.release()
        done = clock()
        recorder.record(
            outcome,
            second,
            since_scheduled=done - due,
            since_sent=done - sent,
            status=status,
            group=group,
            error=error,
            retried=retried,
        )

    async def _request(
        self,
        session: aiohttp.ClientSession,
        attempt: _Attempt,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> tuple[int, str | None]:
        """One attempt: (status, group). ``attempt`` learns whether the connection was reused
        and whether the response began (from then on nothing is retried)."""
        s = self.settings
        group: str | None = None
        async with session.request(
            s.method,
            self.url,
            data=s.body,
            allow_redirects=False,
            trace_request_ctx=attempt,
            timeout=timeout if timeout is not None else session.timeout,
        ) as response:
            attempt.answered = True
            body = await response.read()
            if s.group_by_header:
                group = response.headers.get(s.group_by_header, MISSING_GROUP)
            elif s.group_by_body:
                group = body[: s.group_by_body].decode("utf-8", "replace")
            return response.status, group


class _Attempt:
    """What one attempt's connection did, for the retry rule (see the module doc)."""

    __slots__ = ("answered", "reused")

    def __init__(self) -> None:
        self.reused = False
        self.answered = False


async def _mark_reused(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceConnectionReuseconnParams,
) -> None:
    if isinstance(context.trace_request_ctx, _Attempt):
        context.trace_request_ctx.reused = True


def _retry_kind(exc: aiohttp.ClientConnectionError, attempt: _Attempt) -> str | None:
    """The :data:`RETRY_KINDS` entry when ``exc`` ended ``attempt`` before any response byte;
    None when it must count as it is (refused, a response begun, any other error)."""
    if attempt.answered:
        return None
    if isinstance(exc, aiohttp.ClientConnectorError):
        return CONNECT_RESET if exc.os_error.errno == ECONNRESET else None
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno not in (ECONNRESET, EPIPE):
        return None
    return REUSED_CLOSED if attempt.reused else NEW_CLOSED


def _error_kind(exc: BaseException) -> str:
    """``ClientConnectorError``, or ``ClientOSError: [Errno 104] ...`` trimmed to its errno name."""
    name = type(exc).__name__
    errno = getattr(exc, "errno", None) or getattr(getattr(exc, "os_error", None), "errno", None)
    if isinstance(errno, int):
        return f"{name}({errorcode.get(errno, errno)})"
    return name


async def run_load(
    url: str,
    rps: float,
    duration: float | None = None,
    until: asyncio.Event | Awaitable[Any] | None = None,
    **options: Unpack[LoadSettings],
) -> LoadReport:
    """Run load for ``duration`` seconds, or until ``until`` is set or done, whichever is first.

    ``until`` is awaited only after the warmup, so ``until=deploy()`` deploys under warm load.
    An exception from ``until`` stops the load and propagates. A coroutine still running when
    ``duration`` ends is cancelled; a Task or Future passed in is left alone.
    """
    if duration is None and until is None:
        raise UsageError("run_load: give a duration, an until, or both")
    gen = LoadGenerator(url, rps, duration=duration, **options)
    await gen.start()
    try:
        await gen.warmed_up()
        owned: list[asyncio.Future[Any]] = []  # ours to cancel; a caller's own future is not
        waiters: list[asyncio.Future[Any]] = []
        if duration is not None:
            owned.append(asyncio.ensure_future(gen.finished()))
        if isinstance(until, asyncio.Event):
            owned.append(asyncio.ensure_future(until.wait()))
        elif isinstance(until, asyncio.Future):
            waiters.append(until)
        elif until is not None:
            owned.append(asyncio.ensure_future(until))
        try:
            done, _ = await asyncio.wait([*owned, *waiters], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in owned:
                waiter.cancel()
        for waiter in done:
            waiter.result()  # re-raise a failure of `until`
    except BaseException:
        await gen.close()
        raise
    return await gen.stop()
