"""Every runtime kind nonstop can run instances on, by the name ``[runtime] kind`` gives it.

A kind maps to a factory taking the agent's directories (:class:`RuntimeContext`). Adding a
runtime (ssh hosts, containers) is one driver module implementing the port in
drivers/runtime/base.py, one line here and its name in the config's ``runtime.kind``; the
contract suite (tests/runtime/test_runtime_contract.py) runs every kind listed. The engine
never names a kind: the agent builds the runtime here from the config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nonstop.drivers.runtime.base import Runtime
from nonstop.drivers.runtime.local import LocalRuntime
from nonstop.errors import UsageError


@dataclass(frozen=True, slots=True)
class RuntimeContext:
    state_dir: Path
    """The agent's state dir (.nonstop): instances of another state dir are never touched."""
    log_dir: Path | None = None
    """Where instance output goes, one file per instance (None: discarded)."""


def _local(context: RuntimeContext) -> Runtime:
    return LocalRuntime(log_dir=context.log_dir, state_dir=context.state_dir)


RuntimeFactory = Callable[[RuntimeContext], Runtime]

RUNTIMES: dict[str, RuntimeFactory] = {
    "local": _local,
}


def make_runtime(kind: str, context: RuntimeContext) -> Runtime:
    """The runtime of ``kind``; UsageError naming ``runtime.kind`` for one this version lacks."""
    factory = RUNTIMES.get(kind)
    if factory is None:
        known = " or ".join(f'"{name}"' for name in RUNTIMES)
        raise UsageError(f'runtime.kind: "{kind}" is not available in this version; use {known}')
    return factory(context)
