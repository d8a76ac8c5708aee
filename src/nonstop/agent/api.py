"""The agent's JSON HTTP API. Every request carries ``Authorization: Bearer <token>`` (the
token in .nonstop/token, 0600), compared in constant time; the socket itself is 0600 too.

    GET  /v1/status                  agent, releases, instances, routes, rollout in progress
    POST /v1/deploy                  {release, path, env, config, strategy} -> 202 rollout
    GET  /v1/rollouts[?limit=N]      history;  GET /v1/rollouts/{id} one, with its journal
    GET  /v1/events?after=N[&rollout=ID]
    POST /v1/command                 {command: promote|promote_full|pause|resume|abort|rollback}
    POST /v1/rollback
    GET  /v1/logs?instance=ID|release=NAME&lines=N
    POST /v1/shutdown                {stop_instances: bool}
    GET  /v1/analysis[?rollout=ID]   analysis runs, verdicts and the final reason
    GET  /metrics                    Prometheus exposition (no token: local socket only)

Errors are ``{"error": "..."}`` with 400 (bad input), 404, 409 (conflicts with what runs).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from nonstop.errors import NonstopError, StateError, UsageError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=str), status=status, content_type="application/json"
    )


def error_response(message: str, status: int) -> web.Response:
    return json_response({"error": message}, status)


def auth_middleware(token: str, open_paths: frozenset[str]) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in open_paths:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response("missing or wrong token (see .nonstop/token)", 401)
        try:
            return await handler(request)
        except StateError as exc:
            return error_response(str(exc), 409)
        except UsageError as exc:
            return error_response(str(exc), 400)
        except NonstopError as exc:
            return error_response(str(exc), 500)

    return middleware


async def read_json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError("request body must be a JSON object")
    return body


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
