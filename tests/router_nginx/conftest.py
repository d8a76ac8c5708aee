"""Real nginx: the fixtures every router kind's tests use (router/fixtures.py)."""

from pathlib import Path

import pytest

from router.fixtures import router_binary


@pytest.fixture
def nginx_binary() -> Path:
    return router_binary("nginx")
