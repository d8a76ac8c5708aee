"""The one error tree nonstop raises across layer boundaries.

    NonstopError                 base: every error a user may see
    +-- UsageError               bad input from a user: exit code 2
    |   +-- ConfigError          nonstop.toml (or an API body) is invalid; names the key path
    +-- StateError               the request conflicts with what runs (a rollout in progress...)
    +-- DriverError              a runtime, router or metrics backend failed
    |   +-- RouterError
    |   +-- RuntimeDriverError
    +-- AgentUnavailable         the CLI cannot reach the agent

Lower layers translate foreign exceptions where they cross a boundary and chain them
(`raise RouterError(...) from exc`), so a user sees one clear sentence and a debugger the cause.
"""

from __future__ import annotations

import errno


class NonstopError(Exception):
    """Base of every error nonstop reports to a user."""

    exit_code = 1


class UsageError(NonstopError):
    """Bad input from a user (arguments, files, request bodies)."""

    exit_code = 2


class ConfigError(UsageError):
    """Invalid configuration. ``issues`` holds ``(path, message)`` pairs, e.g.
    ``("strategy.kind", 'expected one of bluegreen, rolling, canary, got "bleugreen"')``."""

    def __init__(self, issues: list[tuple[str, str]], source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        where = f"{source}: " if source else ""
        lines = [
            f"{where}{path}: {message}" if path else f"{where}{message}" for path, message in issues
        ]
        super().__init__("\n".join(lines))


class StateError(NonstopError):
    """The request conflicts with the current state (a second deploy, promote with no rollout)."""

    exit_code = 1


class DriverError(NonstopError):
    """A backend (runtime, router, metrics provider) failed."""


class RouterError(DriverError):
    """The router could not be started, configured or queried."""


class RuntimeDriverError(DriverError):
    """An instance could not be started, stopped or inspected."""


class AgentUnavailable(NonstopError):
    """The CLI could not reach the agent."""


_ERRNO_VERBS = {
    errno.ECONNREFUSED: "refused the connection",
    errno.ENOENT: "does not exist",
    errno.ECONNRESET: "closed the connection",
    errno.EPIPE: "closed the connection",
    errno.ETIMEDOUT: "did not answer in time",
    errno.EACCES: "is not accessible (permission denied)",
}
_DISCONNECTED = frozenset({"ServerDisconnectedError", "IncompleteReadError"})
"""aiohttp's and asyncio's "the other side hung up" (no import of aiohttp here: errors.py is
read by every CLI command, and aiohttp costs ~100 ms to import)."""


def explain(exc: BaseException, subject: str = "") -> str:
    """A foreign exception as one line a person reads: never a class name or a repr.

    With a ``subject`` the line says what failed, as a sentence where it can:

    >>> explain(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "socket /s")
    'socket /s refused the connection'
    >>> explain(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x"))
    'does not exist: /x'
    >>> explain(OSError(errno.ENOSPC, "No space left on device", "/state/db"), "store")
    'store: No space left on device: /state/db'
    >>> explain(ValueError("bad\\nmore"), "table")
    'table: bad'

    aiohttp's connector errors carry the errno of the OSError under them, so "Cannot connect
    to unix socket /s ssl:default [Connection refused]" reads "... refused the connection"."""
    verb = _verb(exc)
    if verb is not None:
        filename = getattr(exc, "filename", None)
        if subject:
            return f"{subject} {verb}"
        return f"{verb}: {filename}" if filename else verb
    text = _text(exc)
    return f"{subject}: {text}" if subject else text


def _verb(exc: BaseException) -> str | None:
    code = getattr(exc, "errno", None)
    if code in _ERRNO_VERBS:
        return _ERRNO_VERBS[code]
    if isinstance(exc, TimeoutError):
        return "did not answer in time"
    if isinstance(exc, EOFError) or type(exc).__name__ in _DISCONNECTED:
        return "closed the connection before answering"
    return None


def _text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, NonstopError):
        return "; ".join(lines) or "unexpected failure"  # already said for people
    return lines[0][:300] if lines else "unexpected failure"
