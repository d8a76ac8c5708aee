"""The registry of router kinds and the agent's use of it (pure: nothing is started)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from nonstop.agent.daemon import make_router
from nonstop.agent.paths import Paths
from nonstop.config.load import parse_config
from nonstop.config.schema import RouterConfig
from nonstop.drivers.router import registry
from nonstop.drivers.router.managed import ManagedRouter
from nonstop.drivers.router.registry import ROUTERS
from nonstop.drivers.router.settings import RouterSettings
from nonstop.errors import UsageError

CONFIG = """\
[app]
name = "shop"
command = "app --port {{port}}"
drain_timeout = "7s"

[health]
path = "/ready"

[router]
listen = "127.0.0.1:18080"
kind = "KIND"
"""


@pytest.mark.parametrize("kind", list(ROUTERS))
def test_the_agent_builds_every_kind_with_its_settings(kind: str, tmp_path: Path) -> None:
    config = parse_config(CONFIG.replace("KIND", kind))
    router = make_router(Paths(tmp_path), config)
    assert isinstance(router, ManagedRouter)
    assert (router.program, router.listen) == (kind, "127.0.0.1:18080")
    assert (router.settings.drain_timeout, router.settings.health_path) == (7.0, "/ready")
    assert router.state_dir == (tmp_path / ".nonstop" / "router").resolve()


def test_a_kind_the_registry_lacks_is_a_usage_error_naming_the_known_ones(
    tmp_path: Path,
) -> None:
    known = " or ".join(f'"{kind}"' for kind in ROUTERS)
    settings = RouterSettings(listen="127.0.0.1:18080")
    with pytest.raises(UsageError, match=f'router.kind: "traefik" is not available yet.*{known}'):
        registry.make_router("traefik", tmp_path, settings)


def test_every_kind_the_config_accepts_is_registered() -> None:
    accepted = RouterConfig.model_fields["kind"].annotation
    assert set(get_args(accepted)) == set(ROUTERS)
