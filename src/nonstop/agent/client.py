"""Client of the agent's HTTP API (unix socket, or loopback TCP), used by the CLI."""

from __future__ import annotations

import asyncio
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
        message (409 -> StateError, 400 -> UsageError)."""
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
                text = await response.text()
                status = response.status
        except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise AgentUnavailable(
                f"cannot reach the agent at {self.paths.socket} ({exc.__class__.__name__}); "
                "is it running? start it with `nonstop up`"
            ) from exc
        except TimeoutError as exc:
            raise AgentUnavailable(f"the agent did not answer within {self.timeout:g}s") from exc
        data = json.loads(text) if text else None
        if status >= 400:
            message = data.get("error", text) if isinstance(data, dict) else text
            if status == 409:
                raise StateError(message)
            if status in (400, 404, 422):
                raise UsageError(message)
            raise NonstopError(f"agent error {status}: {message}")
        return data

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
