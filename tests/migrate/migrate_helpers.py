"""Helpers of the migration runner tests: the root conftest's require_binary, files, config."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nonstop.migrate.runner import Target

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def require_binary(name: str, *candidates: str) -> str:
    """tests/conftest.py's require_binary (loaded by path: every test dir has a `conftest`)."""
    spec = importlib.util.spec_from_file_location("nonstop_root_conftest", ROOT_CONFTEST)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: Callable[..., str] = module.require_binary
    return found(name, *candidates)


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return directory


def target(directory: Path, url: str, **overrides: Any) -> Target:
    """A Target with quick retries, so tests that hit a busy lock stay short."""
    from nonstop.migrate.policy import RetryPolicy

    settings: dict[str, Any] = {
        "lock_timeout": 0.2,
        "retry": RetryPolicy(max_attempts=200, base_delay=0.02, max_delay=0.2),
    }
    settings.update(overrides)
    return Target(directory=directory, url=url, **settings)
