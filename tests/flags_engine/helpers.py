"""Shared pieces of the flag engine tests: the conformance suite's location and loaders."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def conformance_dir() -> Path:
    """tests/conftest.py's conformance_dir (loaded by path: other test dirs have a `conftest`)."""
    spec = importlib.util.spec_from_file_location("nonstop_root_conftest", ROOT_CONFTEST)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: Path = module.conformance_dir()
    return found


def spec_dir() -> Path:
    return conformance_dir() / "unleash-client-spec"


def spec_files() -> list[str]:
    """The names index.json lists, or [] when the suite is absent (tests then skip)."""
    index = spec_dir() / "index.json"
    if not index.is_file():
        return []
    names: list[str] = json.loads(index.read_text(encoding="utf-8"))
    return names


@cache
def load_spec(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((spec_dir() / name).read_text(encoding="utf-8"))
    return loaded


def require_spec() -> None:
    if not (spec_dir() / "index.json").is_file():
        pytest.skip(
            f"Unleash client specification not found at {spec_dir()} "
            "(set NONSTOP_CONFORMANCE_DIR to the folder holding unleash-client-spec/)"
        )
