"""Helpers any test can import (tests/ is on sys.path through the root conftest)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def require_binary(name: str, *candidates: str) -> str:
    """Path of a system binary the test needs. Missing: fail under CI=true, skip elsewhere.

    `make test` installs these through scripts/install-system-deps.sh."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    reason = f"{name} is not installed (scripts/install-system-deps.sh installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def conformance_dir() -> Path:
    return Path(
        os.environ.get("NONSTOP_CONFORMANCE_DIR", REPO_ROOT.parent / "shared" / "conformance")
    )


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true and return it (a condition, not a fixed
    sleep); fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
