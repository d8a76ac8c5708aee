"""Dashboard fixtures: the end-to-end project and agent (e2e/harness.py)."""

from __future__ import annotations

from e2e.conftest import agent, project

__all__ = ["agent", "project"]
