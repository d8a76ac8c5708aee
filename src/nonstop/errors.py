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
