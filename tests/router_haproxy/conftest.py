"""Real HAProxy, real upstream servers on free ports, a state directory under /tmp.

The state directory is made with a short name because unix socket paths are limited to 107
bytes and pytest's tmp_path can be longer than that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nonstop.drivers.router.haproxy import HAProxyRouter
from nonstop_testing import require_binary
from router.fixtures import backends, client, state_dir  # noqa: F401  (fixtures)
from router.helpers import free_port


@pytest.fixture
def haproxy_binary() -> Path:
    return Path(require_binary("haproxy", "/usr/sbin/haproxy"))


@pytest.fixture
async def router(
    state_dir: Path,  # noqa: F811 (the fixture imported above)
    haproxy_binary: Path,
) -> AsyncIterator[HAProxyRouter]:
    router = HAProxyRouter(
        state_dir, f"127.0.0.1:{free_port()}", drain_timeout=5.0, haproxy_binary=haproxy_binary
    )
    await router.start()
    try:
        yield router
    finally:
        await router.stop()
