"""Real Caddy, real upstream servers on free ports, a state directory under /tmp.

The state directory is made with a short name because unix socket paths are limited to 107
bytes and pytest's tmp_path can be longer than that.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import require_binary
from nonstop.drivers.router.caddy import CaddyRouter
from router.fixtures import backends, client, state_dir  # noqa: F401  (fixtures)

from .helpers import free_port


@pytest.fixture
def caddy_binary() -> Path:
    return Path(require_binary("caddy", str(Path(sys.prefix) / "bin" / "caddy")))


@pytest.fixture
async def router(state_dir: Path, caddy_binary: Path) -> AsyncIterator[CaddyRouter]:  # noqa: F811
    router = CaddyRouter(
        state_dir, f"127.0.0.1:{free_port()}", drain_timeout=5.0, caddy_binary=caddy_binary
    )
    await router.start()
    try:
        yield router
    finally:
        await router.stop()
