"""Real HAProxy, real upstream servers on free ports, a state directory under /tmp: the
fixtures every router kind's tests use (router/fixtures.py), for the kind "haproxy"."""

import pytest

from router.fixtures import (  # noqa: F401  (fixtures)
    backends,
    client,
    make_router,
    router,
    state_dir,
)


@pytest.fixture
def kind() -> str:
    return "haproxy"
