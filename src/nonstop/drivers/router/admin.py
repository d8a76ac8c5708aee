"""What both router drivers do around their admin interface and listener.

Bounded retries: an admin call (Caddy's API on its unix socket, HAProxy's runtime API) that
fails in a way that can pass - the socket refused or reset the connection, the request body
could not be written, a reply timed out - is tried again a few times with jittered exponential
backoff, within a bounded total time, then a RouterError says what was tried and how often.
An answer that is a refusal (Caddy's 4xx, HAProxy's error text) is not retried: trying again
would give the same answer.

The table probe: after every ``apply()`` the driver sends one request through the LISTEN
address (not the admin socket) that the router answers itself and never forwards::

    GET /.well-known/nonstop/router      with header  X-Nonstop-Probe: table
    -> 200, body: the hash of the route table the listener serves (``table_hash``)

Both the path and the header must match, so an application's own paths are never shadowed; the
probe is never written to the request stream. ``apply()`` raises RouterError when the answer is
missing or names another table: an admin interface that answers while nothing (or something
else) serves the port is found out at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from functools import reduce
from typing import TypeVar

import aiohttp

from nonstop.drivers.router.base import RouteTable
from nonstop.errors import RouterError

T = TypeVar("T")

PROBE_PATH = "/.well-known/nonstop/router"
PROBE_HEADER = "X-Nonstop-Probe"
PROBE_VALUE = "table"

ADMIN_ATTEMPTS = 4
ADMIN_BUDGET = 5.0
"""Seconds all attempts of one admin call may take together (each attempt's own timeout is cut
to what is left)."""
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 1.0


class AdminUnavailable(RouterError):
    """The admin interface could not be reached or dropped the call: worth trying again."""


def backoff(attempt: int, *, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> float:
    """Full jitter: uniform in [0, min(cap, first * 2**attempt)] (attempt 0, 1, 2 ...), so
    agents retrying at once spread out instead of hitting the socket together."""
    return random.uniform(0.0, min(cap, first * 2**attempt))


async def with_retries(
    call: Callable[[float], Awaitable[T]],
    *,
    what: str,
    timeout: float,
    attempts: int = ADMIN_ATTEMPTS,
    budget: float = ADMIN_BUDGET,
) -> T:
    """``await call(attempt_timeout)`` until it does not raise AdminUnavailable, at most
    ``attempts`` times and within ``max(budget, timeout)`` seconds in all; then RouterError
    naming ``what``, the attempts made and the last failure (chained)."""
    deadline = time.monotonic() + max(budget, timeout)
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        try:
            return await call(max(0.1, min(timeout, remaining)))
        except AdminUnavailable as exc:
            attempt += 1
            pause = backoff(attempt - 1)
            if attempt >= attempts or time.monotonic() + pause >= deadline:
                raise RouterError(
                    f"{what} failed {attempt} time(s) within "
                    f"{max(budget, timeout):g} s; last: {exc}"
                ) from exc
            await asyncio.sleep(pause)


def table_hash(table: RouteTable) -> str:
    """A short stable hash of what ``table`` routes: upstreams in order, weights divided by
    their gcd ([2] and [1] route the same and hash the same, so applying either changes
    nothing)."""
    divisor = reduce(math.gcd, (u.weight for u in table.upstreams), 0) or 1
    rows = [[u.instance_id, u.release, u.address, u.weight // divisor] for u in table.upstreams]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def probe_url(listen: str) -> str:
    """``http://<listen>/.well-known/...``; a wildcard host (``:8080``, ``0.0.0.0``, ``[::]``)
    is reached on the loopback address."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "[::]":
        host = "[::1]"
    return f"http://{host}:{port}{PROBE_PATH}"


async def served_hash(listen: str, timeout: float = 2.0) -> str | None:
    """What the listener says it serves, or None when it does not answer the probe."""
    headers = {PROBE_HEADER: PROBE_VALUE, "Connection": "close"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(probe_url(listen), headers=headers) as response,
        ):
            text = (await response.text()).strip()
            return text if response.status == 200 else None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None


async def confirm_listener(name: str, listen: str, table: RouteTable, *, within: float) -> None:
    """Wait (bounded by ``within`` seconds) until the listener answers the probe with
    ``table``'s hash; RouterError otherwise, saying what it answered."""
    expected = table_hash(table)
    deadline = time.monotonic() + within
    attempt = 0
    while True:
        got = await served_hash(listen, timeout=max(0.5, min(2.0, deadline - time.monotonic())))
        if got == expected:
            return
        if time.monotonic() >= deadline:
            seen = "no answer" if got is None else f"table {got}"
            raise RouterError(
                f"{name} accepted the route table {expected} but its listener {listen} does "
                f"not serve it ({seen} to GET {PROBE_PATH} within {within:g} s): is another "
                "program on that port, or the router stopped?"
            )
        await asyncio.sleep(backoff(attempt, first=0.02, cap=0.2))
        attempt += 1
