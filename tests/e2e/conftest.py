"""End-to-end fixtures (see harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from e2e.harness import AgentProcess, Project, free_port


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "shop"
    root.mkdir()
    app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
    (root / "app.py").write_text(app)
    proj = Project(root, free_port())
    proj.write_config()
    return proj


@pytest.fixture
def agent(project: Project) -> Iterator[AgentProcess]:
    proc = AgentProcess(project)
    yield proc
    proc.cleanup()
