"""Client of the agent's HTTP API (its unix socket), used by the CLI.

Whatever the agent answers, a caller gets data or a NonstopError with a sentence a user can
act on: never a decoding traceback, never an internal class name."""

from __future__ import annotations

import asyncio
import errno
import json
from typing import Any

import aiohttp

from nonstop.agent.paths import Paths
from nonstop.errors import AgentUnavailable, NonstopError, StateError, UsageError


class AgentClient:
    def __init__(self, paths: Paths, *, timeout: float = 30.0) -> None:
        self.paths = paths
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Synchronous request for the CLI; raises NonstopError subclasses with the agent's
        message (409 -> StateError, 400 -> UsageError, unreachable -> AgentUnavailable)."""
        return asyncio.run(self.request(method, path, body))

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        token = self.paths.read_token()
        if not self.paths.socket.exists() or token is None:
            raise AgentUnavailable(
                f"no agent is running for {self.paths.project} (start it with `nonstop up`)"
            )
        connector = aiohttp.UnixConnector(path=str(self.paths.socket))
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.request(
                    method, f"http://agent{path}", json=body, headers=headers
                ) as response,
            ):
                raw = await response.read()
                status = response.status
        except TimeoutError as exc:
            raise AgentUnavailable(f"the agent did not answer within {self.timeout:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentUnavailable(unreachable(self.paths, exc)) from exc
        return decode(status, raw)

    def ping(self) -> bool:
        try:
            self.call("GET", "/v1/status")
        except NonstopError:
            return False
        return True

    async def aping(self) -> bool:
        try:
            await self.request("GET", "/v1/status")
        except NonstopError:
            return False
        return True


def unreachable(paths: Paths, exc: BaseException) -> str:
    """Why the socket did not answer, in words (no exception class names)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno in (errno.ECONNREFUSED, errno.ENOENT):
        return (
            f"no agent is running for {paths.project} (nothing listens on {paths.socket}; "
            "start it with `nonstop up`)"
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        why = "it closed the connection"
    elif isinstance(cause, OSError) and cause.strerror:
        why = cause.strerror.lower()
    else:
        why = str(exc) or "the connection failed"
    return f"cannot reach the agent at {paths.socket}: {why}; is it running? (`nonstop up`)"


def decode(status: int, raw: bytes) -> Any:
    """The agent's answer as data, or the error it reports."""
    text = raw.decode(errors="replace")
    try:
        data = json.loads(text) if text.strip() else None
    except (json.JSONDecodeError, RecursionError):
        snippet = " ".join(text.split())[:200]
        raise NonstopError(
            f"the agent answered {status} with something that is not JSON: {snippet!r}"
        ) from None
    if status >= 400:
        message = data.get("error") if isinstance(data, dict) else None
        message = str(message) if message else (text.strip()[:200] or "no message")
        if status == 409:
            raise StateError(message)
        if status in (400, 404, 413, 422):
            raise UsageError(message)
        raise NonstopError(f"the agent failed (HTTP {status}): {message}")
    return data
