"""The phase-aware PostgreSQL migration linter behind ``nonstop migrate lint``.

Pure: no database, no clock. Files are parsed with the real PostgreSQL parser (pglast /
libpg_query); rules (rules.py, one function each) read the tree and the state carried between
statements (state.py) and report findings with a message, the safe alternative and, where the
safe sequence is mechanical, the SQL that ``--fix`` writes (fixes.py).

The engine (and with it the parser and the rules) is imported on first use of a name that
needs it: a lint answered from the cache (frameworks) reads findings without loading pglast.
"""

from __future__ import annotations

from types import ModuleType
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
    collector would scan again and again while they load (~3.5 ms of CPU, 5% of the import).
    pglast's enums and AST classes are deferred (``_defer_pglast_modules``)."""
    import gc
    import importlib

    enabled = gc.isenabled()
    gc.disable()
    try:
        _defer_pglast_modules()
        importlib.import_module("nonstop.migrate.lint.engine")
    finally:
        if enabled:
            gc.enable()


def _defer_pglast_modules() -> None:
    """Let ``pglast.parser`` load without running ``pglast.enums`` and ``pglast.ast``.

    The parser extension and pglast's package binds both modules at load (``from . import
    ast, enums``) but reads them only to build pglast's Python objects (``parse_sql``), which
    the linter never asks for; running them costs ~25 ms of CPU, a fifth of a one-statement
    lint (docs/decisions/0591-lint-start-up-defers-pglast-enums.md). So before pglast is first
    imported, each gets a stand-in module that imports the real one on its first attribute
    read and forwards every read to it from then on: any code that uses them, in this process,
    gets the real modules, only later."""
    import sys

    if "pglast" in sys.modules:
        return
    import importlib.util
    import os

    spec = importlib.util.find_spec("pglast")
    if spec is None or not spec.submodule_search_locations:
        return
    deferred = {name: _Deferred(f"pglast.{name}") for name in ("ast", "enums")}
    # a package: ``import pglast.enums.nodes`` before first use must find the same file the
    # real ``pglast.enums`` imports then (the import system reads ``__path__`` of the parent
    # without looking at sys.modules again: a stand-in without one would load it twice)
    deferred["enums"].__path__ = [
        os.path.join(location, "enums") for location in spec.submodule_search_locations
    ]
    sys.modules.update((module.__name__, module) for module in deferred.values())
    import pglast

    for name, module in deferred.items():  # ``import pglast.enums; pglast.enums.X`` works
        if name not in vars(pglast):
            setattr(pglast, name, module)


class _Deferred(ModuleType):
    """A module that is imported on first use (see ``_defer_pglast_modules``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__spec__ = None  # the import system's "still initialising?" check reads it

    def _load(self) -> ModuleType:
        real: ModuleType | None = self.__dict__.get("_real")
        if real is None:
            import importlib
            import sys

            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)

    def __dir__(self) -> list[str]:
        return dir(self._load())


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
