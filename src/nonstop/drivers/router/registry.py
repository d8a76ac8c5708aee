"""Every router kind nonstop can run, by the name ``[router] kind`` gives it.

A kind maps to a factory taking the router's state directory and its settings (listen address,
drain timeout, health path, upstream timeout ...: settings.RouterSettings). Adding a router is
one driver module (a ManagedRouter), one config renderer, and one line here; the contract suite
(tests/router/test_router_contract.py) runs every kind listed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nonstop.drivers.router.caddy import CaddyRouter
from nonstop.drivers.router.haproxy import HAProxyRouter
from nonstop.drivers.router.managed import ManagedRouter
from nonstop.drivers.router.nginx import NginxRouter
from nonstop.drivers.router.settings import RouterSettings
from nonstop.errors import UsageError

RouterFactory = Callable[[Path, RouterSettings], ManagedRouter]

ROUTERS: dict[str, RouterFactory] = {
    "caddy": CaddyRouter,
    "haproxy": HAProxyRouter,
    "nginx": NginxRouter,
}


def make_router(kind: str, state_dir: Path, settings: RouterSettings) -> ManagedRouter:
    """The router of ``kind``; UsageError naming ``router.kind`` for one this version lacks."""
    factory = ROUTERS.get(kind)
    if factory is None:
        known = " or ".join(f'"{name}"' for name in ROUTERS)
        raise UsageError(f'router.kind: "{kind}" is not available yet in this version; use {known}')
    return factory(state_dir, settings)
