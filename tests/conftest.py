"""Shared fixtures. Feature-specific fixtures live in each tests/<area>/conftest.py; helpers
that tests import live in tests/nonstop_testing.py."""

from __future__ import annotations

from nonstop_testing import REPO_ROOT, conformance_dir, require_binary

__all__ = ["REPO_ROOT", "conformance_dir", "require_binary"]
