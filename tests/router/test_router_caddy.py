"""What only the Caddy driver does: a whole-config reload per change, skipped when nothing
changed, and its JSON admin API. The router contract is tests/router/test_router_contract.py."""

from __future__ import annotations

import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from nonstop.drivers.router.caddy import CaddyRouter
from nonstop.errors import RouterError

from .fixtures import new_router
from .helpers import Backend, fake_admin, table

MakeBackend = Callable[[str], Awaitable[Backend]]


@pytest.fixture
def kind() -> str:
    """``router`` and ``make_router`` (router/fixtures.py) make Caddy routers here."""
    return "caddy"


async def test_applying_the_same_table_again_does_not_reload(
    router: CaddyRouter, backends: MakeBackend
) -> None:
    a = await backends("A")
    await router.apply(table(a.upstream(1)))

    def servers_started() -> int:  # Caddy logs this once per (re)load of the HTTP app
        return router.log_file.read_text().count('"msg":"server running"')

    before = servers_started()
    for _ in range(3):
        await router.apply(table(a.upstream(1)))
    assert servers_started() == before
    await router.apply(table(a.upstream(2)))  # [2] reduces to [1]: the same config again
    assert servers_started() == before
    await router.apply(table(a.upstream(0)))
    assert servers_started() == before + 1


async def test_the_admin_api_is_a_private_unix_socket(router: CaddyRouter) -> None:
    assert stat.S_IMODE(router.admin_socket.stat().st_mode) == 0o600
    config = await router.config()
    assert config["admin"]["listen"] == f"unix/{router.admin_socket}|0600"


async def test_apply_fails_when_the_listener_does_not_serve_the_table(
    state_dir: Path,
    backends: MakeBackend,
) -> None:
    """The reproduction: an admin socket that says yes to everything, nothing on the port."""
    router = new_router("caddy", state_dir, confirm_timeout=1.0)
    fake = await fake_admin(router.admin_socket)
    try:
        a = await backends("A")
        with pytest.raises(RouterError, match=r"its listener 127\.0\.0\.1:\d+ does not serve it"):
            await router.apply(table(a.upstream(1)))
    finally:
        await fake.cleanup()
        await router.close()
