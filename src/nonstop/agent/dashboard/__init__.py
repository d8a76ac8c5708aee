"""The web dashboard the agent serves on ``[dashboard] listen`` (docs/dashboard.md).

The agent starts it with :func:`start_dashboard` and answers ``POST /v1/dashboard/login`` (the
one-time link `nonstop dashboard` prints) through :func:`api_routes`. Other routes can share the
dashboard's listener behind a bearer token: pass them as :class:`TokenRoute`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from nonstop.agent.api import json_response
from nonstop.agent.dashboard.server import Dashboard, TokenRoute
from nonstop.errors import StateError

if TYPE_CHECKING:
    from nonstop.agent.dashboard.views import AgentView
    from nonstop.config.schema import DashboardConfig

__all__ = ["Dashboard", "TokenRoute", "api_routes", "start_dashboard"]

OFF = (
    'the dashboard is off: set [dashboard] listen = "127.0.0.1:8470" in nonstop.toml, then '
    "restart the agent (`nonstop down --keep && nonstop up`: instances keep serving)"
)


async def start_dashboard(
    agent: AgentView, settings: DashboardConfig, token_routes: Sequence[TokenRoute] = ()
) -> Dashboard | None:
    """The dashboard listening on ``settings.listen``, or None when it is not set."""
    if settings.listen is None:
        return None
    dashboard = Dashboard(agent, settings, token_routes)
    await dashboard.start()
    return dashboard


def api_routes(current: Callable[[], Dashboard | None]) -> list[web.RouteDef]:
    """The agent API's side: ``POST /v1/dashboard/login`` -> {url, base_url, expires_in}."""

    async def login(request: web.Request) -> web.Response:
        dashboard = current()
        if dashboard is None:
            raise StateError(OFF)
        return json_response(dashboard.login_url())

    return [web.post("/v1/dashboard/login", login)]
