"""The agent's JSON HTTP API. Every request carries ``Authorization: Bearer <token>`` (the
token in .nonstop/token, 0600), compared in constant time; the socket itself is 0600 too.

    GET  /v1/status                  agent, releases, instances, routes, rollout in progress
    POST /v1/deploy                  {release, path, env, config, strategy} -> 202 rollout
    GET  /v1/rollouts[?limit=N]      history;  GET /v1/rollouts/{id} one, with its journal
    GET  /v1/events?after=N[&rollout=ID][&limit=N]
    POST /v1/command                 {command: promote|promote_full|pause|resume|abort|rollback}
    POST /v1/rollback
    POST /v1/front                   {serving: bool}: the router's front health path says 200 or
                                     503 to a load balancer in front (router.front_health)
    GET  /v1/logs?instance=ID|release=NAME&lines=N
    POST /v1/shutdown                {stop_instances: bool}
    POST /v1/migrate/contract        {directory, url, lock_timeout, pg_version}: the contract
                                     gate and run, with no deploy able to start in between
    GET  /v1/analysis[?rollout=ID]   analysis runs, verdicts and the final reason
    GET  /metrics                    Prometheus exposition: no API token; ``[metrics] token``
                                     when set (agent/metrics.py)

Errors are always JSON, ``{"error": "..."}``: 400 (bad input: bad JSON, a body nested deeper
than MAX_DEPTH, an integer out of range), 401, 404, 409 (conflicts with what runs), 413 (a
body over MAX_BODY), 500 (the agent failed; the message says what, the traceback goes to
agent.log). No request reaches a handler's internals with input it cannot take.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import sqlite3
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from nonstop.engine.health import describe
from nonstop.errors import NonstopError, StateError, UsageError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 4 * 1024 * 1024
"""Largest request body (a deploy carries the whole nonstop.toml, never megabytes)."""
MAX_DEPTH = 64
"""Deepest JSON nesting a request body may have."""
MAX_ID = 2**63 - 1
"""Largest id SQLite stores."""


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=str), status=status, content_type="application/json"
    )


def error_response(message: str, status: int) -> web.Response:
    return json_response({"error": message}, status)


async def answer_errors(
    request: web.Request, handler: Handler, who: str, hint: str = ""
) -> web.StreamResponse:
    """``handler``'s answer, with every error turned into a JSON one: 409 for a state conflict,
    400 for bad input, the HTTP error's own status, 503 for a write the full state disk
    refused, 500 otherwise - never a plain traceback (that goes to agent.log)."""
    try:
        return await handler(request)
    except StateError as exc:
        return error_response(str(exc), 409)
    except UsageError as exc:
        return error_response(str(exc), 400)
    except NonstopError as exc:
        return error_response(str(exc), 500)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(f"{request.method} {request.path}: {exc.reason}", exc.status)
    except (OSError, sqlite3.Error) as exc:
        if not unwritable(exc):
            return _failed(request, who, hint, exc)
        # Nothing was changed (the write failed): the agent is fine, the disk is not; a
        # client may try again once there is space.
        why = f"the state store cannot write: {describe(exc)}; nothing was changed"
        return error_response(f"{request.method} {request.path}: {why}", 503)
    except Exception as exc:
        return _failed(request, who, hint, exc)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def unwritable(exc: BaseException) -> bool:
    """A write refused for want of space (or a read-only disk): SQLite's "database or disk is
    full" (SQLITE_FULL) or an OSError saying so."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def _failed(request: web.Request, who: str, hint: str, exc: BaseException) -> web.Response:
    """500 with the reason in one line; the traceback goes to agent.log."""
    with contextlib.suppress(OSError):  # agent.log may sit on a full disk
        print(f"error: {who}: {request.method} {request.path} failed:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
    text = f"{who} failed on {request.method} {request.path}: {describe(exc)}"
    return error_response(f"{text} {hint}".rstrip(), 500)


def auth_middleware(token: str, open_paths: frozenset[str]) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in open_paths:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response("missing or wrong token (see .nonstop/token)", 401)
        return await answer_errors(
            request, handler, "the agent", "(details in .nonstop/logs/agent.log)"
        )

    return middleware


async def read_json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()  # the app's client_max_size answers 413 past MAX_BODY
    if len(raw) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(raw))
    depth = json_depth(raw)
    if depth > MAX_DEPTH:
        raise UsageError(f"request body is nested more than {MAX_DEPTH} levels deep")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, 4,300+ digits
        raise UsageError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError("request body must be a JSON object")
    return body


def json_depth(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """How deep brackets nest in ``raw`` (ignoring those inside strings), exact up to
    ``limit`` and ``limit + 1`` for anything deeper; checked before parsing, so a deep body
    never reaches the parser's recursion."""
    opening = raw.count(b"[") + raw.count(b"{")
    if opening <= limit:
        return opening  # cannot nest deeper than it opens
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break  # deep enough to refuse: no need to read the rest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def int_value(value: str, what: str, *, low: int = 0, high: int = MAX_ID) -> int:
    """``value`` as an integer in ``[low, high]``, else a UsageError naming ``what``."""
    try:
        number = int(value, 10) if len(value) <= 20 else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise UsageError(f"{what}: expected an integer from {low} to {high}, got {value[:40]!r}")
    return number


def int_param(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    value = request.query.get(name)
    return default if value is None else int_value(value, name, low=low, high=high)


def tail_file(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return data.splitlines()[-lines:]
