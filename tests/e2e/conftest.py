"""End-to-end fixtures (see harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from e2e.harness import AgentProcess, Project, free_port
from router.fixtures import router_binary


@pytest.fixture
def router_kind() -> str:
    """The router the project runs: Caddy, the default, unless a test is parametrized over
    ``router_kind`` (harness.ROUTER_KINDS)."""
    return "caddy"


@pytest.fixture
def project(tmp_path: Path, router_kind: str) -> Project:
    router_binary(router_kind)  # a kind whose binary is missing: fail under CI=true, else skip
    root = tmp_path / "shop"
    root.mkdir()
    app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
    (root / "app.py").write_text(app)
    proj = Project(root, free_port(), router_kind)
    proj.write_config()
    return proj


@pytest.fixture
def agent(project: Project) -> Iterator[AgentProcess]:
    proc = AgentProcess(project)
    yield proc
    proc.cleanup()
