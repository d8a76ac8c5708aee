"""Server-sent events: a page's data, sent again whenever it changes.

The stream computes its page's payload every ``interval`` seconds and sends it (``event:
NAME``, ``data: JSON``) only when it differs from what it sent last; a comment line every
``keepalive`` seconds otherwise, so proxies and the browser keep the connection open. It ends
when the client goes, when the dashboard closes, or when ``alive()`` turns false (the session
ended). A tick that fails sends a ``problem`` event with the reason and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from nonstop.engine.health import describe

Produce = Callable[[], Awaitable[dict[str, Any]]]
"""Returns {event name: payload}; each event is sent when its payload changed."""


async def serve(
    request: web.Request,
    produce: Produce,
    stop: asyncio.Event,
    alive: Callable[[], bool],
    *,
    interval: float = 1.0,
    keepalive: float = 15.0,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    sent: dict[str, str] = {}
    quiet_since = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        while not stop.is_set() and alive():
            changed = await _send_changed(response, await _produce(produce), sent)
            if changed:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= keepalive:
                await response.write(b": keepalive\n\n")
                quiet_since = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    return response


async def _produce(produce: Produce) -> dict[str, Any]:
    """The page's data, or what kept it from being read (a full disk, say) as a ``problem``
    event: a failing tick never ends the stream; the next one tries again."""
    try:
        return await produce()
    except Exception as exc:
        return {"problem": {"error": describe(exc)}}


async def _send_changed(
    response: web.StreamResponse, payloads: dict[str, Any], sent: dict[str, str]
) -> bool:
    changed = False
    if "problem" not in payloads:
        sent.pop("problem", None)  # the same problem again later is news again
    for name, payload in payloads.items():
        text = json.dumps(payload, default=str, separators=(",", ":"))
        if sent.get(name) != text:
            await response.write(f"event: {name}\ndata: {text}\n\n".encode())
            sent[name] = text
            changed = True
    return changed
