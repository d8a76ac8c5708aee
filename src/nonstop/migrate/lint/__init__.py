"""The phase-aware PostgreSQL migration linter behind ``nonstop migrate lint``.

Pure: no database, no clock. Files are parsed with the real PostgreSQL parser (pglast /
libpg_query); rules (rules.py, one function each) read the tree and the state carried between
statements (state.py) and report findings with a message, the safe alternative and, where the
safe sequence is mechanical, the SQL that ``--fix`` writes (fixes.py).

The engine (and with it the parser and the rules) is imported on first use of a name that
needs it: a lint answered from the cache (frameworks) reads findings without loading pglast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nonstop.migrate.lint.model import (
    DEFAULT_PG_VERSION,
    FileResult,
    Finding,
    LintInputError,
    LintOptions,
)

if TYPE_CHECKING:
    from nonstop.migrate.lint.engine import apply_fixes, describe_rules, lint_files, lint_text
    from nonstop.migrate.lint.registry import RULES

_LAZY = {
    "RULES": "nonstop.migrate.lint.registry",
    "apply_fixes": "nonstop.migrate.lint.engine",
    "describe_rules": "nonstop.migrate.lint.engine",
    "lint_files": "nonstop.migrate.lint.engine",
    "lint_text": "nonstop.migrate.lint.engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    importlib.import_module("nonstop.migrate.lint.engine")  # registers the rules
    return getattr(importlib.import_module(module), name)


def load_engine() -> None:
    """Import the engine (the parser and the rules) with the cyclic collector paused: ~60 ms
    of imports that create thousands of classes and functions and no garbage, which the
    collector would scan again and again while they load (~3.5 ms of CPU, 5% of the import)."""
    import gc
    import importlib

    enabled = gc.isenabled()
    gc.disable()
    try:
        importlib.import_module("nonstop.migrate.lint.engine")
    finally:
        if enabled:
            gc.enable()


__all__ = [
    "DEFAULT_PG_VERSION",
    "RULES",
    "FileResult",
    "Finding",
    "LintInputError",
    "LintOptions",
    "apply_fixes",
    "describe_rules",
    "lint_files",
    "lint_text",
    "load_engine",
]
