"""Requests through the router, a load loop and an event collector for the HAProxy tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp

from nonstop.drivers.router.base import RequestEvent
from nonstop.drivers.router.haproxy import HAProxyRouter


def url(router: HAProxyRouter, path: str = "/") -> str:
    return f"http://{router.listen}{path}"


async def get(
    client: aiohttp.ClientSession, router: HAProxyRouter, path: str = "/"
) -> tuple[int, str]:
    async with client.get(url(router, path)) as response:
        return response.status, await response.text()


async def load(
    client: aiohttp.ClientSession, router: HAProxyRouter, requests: int, workers: int = 4
) -> tuple[Counter[str], list[str]]:
    """``workers`` keep-alive loops sending ``requests`` GETs in all; bodies seen, failures."""
    served: Counter[str] = Counter()
    failures: list[str] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            try:
                status, body = await get(client, router)
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))
                continue
            if status == 200:
                served[body] += 1
            else:
                failures.append(f"{status} {body.strip()}")
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(requests // workers) for _ in range(workers)))
    return served, failures


async def wait_for(predicate: Callable[[], Awaitable[bool]], deadline: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await predicate():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)
    return True


class Collector:
    """Collects ``router.events()`` in the background into ``events``."""

    def __init__(self, router: HAProxyRouter) -> None:
        self.events: list[RequestEvent] = []
        self._task = asyncio.create_task(self._run(router))

    async def _run(self, router: HAProxyRouter) -> None:
        async for event in router.events():
            self.events.append(event)

    async def until(self, count: int, deadline: float = 10.0) -> list[RequestEvent]:
        """Wait (bounded) until ``count`` events arrived; return them all."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while len(self.events) < count and loop.time() < end:
            await asyncio.sleep(0.02)
        return self.events

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
