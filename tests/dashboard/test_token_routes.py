"""Routes that share the dashboard's listener behind a bearer token (a Prometheus scrape):
served over a real socket, the token checked, and the session still required elsewhere."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import aiohttp
from aiohttp import web

from nonstop.agent.dashboard import TokenRoute, start_dashboard
from nonstop.config.schema import DashboardConfig
from nonstop.drivers.metrics import RequestStats


async def scrape(request: web.Request) -> web.Response:
    return web.Response(text="nonstop_up 1\n", content_type="text/plain")


async def test_a_token_route_answers_with_its_bearer_token_only() -> None:
    # Only the listener and its routing are under test: the agent is never consulted.
    agent = cast(Any, SimpleNamespace(stats=RequestStats()))
    settings = DashboardConfig(listen="127.0.0.1:0")
    route = TokenRoute(web.get("/metrics", scrape), "s3cret")
    dashboard = await start_dashboard(agent, settings, [route])
    assert dashboard is not None
    try:
        async with aiohttp.ClientSession() as http:
            url = dashboard.base_url
            async with http.get(f"{url}/metrics") as missing:
                assert missing.status == 401
            wrong = {"Authorization": "Bearer nope"}
            async with http.get(f"{url}/metrics", headers=wrong) as refused:
                assert refused.status == 401
            good = {"Authorization": "Bearer s3cret"}
            async with http.get(f"{url}/metrics", headers=good) as answered:
                assert answered.status == 200
                assert await answered.text() == "nonstop_up 1\n"
                assert "Set-Cookie" not in answered.headers
            async with http.get(f"{url}/api/overview", headers=good) as other:
                assert other.status == 401  # the token opens its own routes, nothing else
    finally:
        await dashboard.close()


async def test_no_listen_no_dashboard() -> None:
    agent = cast(Any, SimpleNamespace(stats=RequestStats()))
    assert await start_dashboard(agent, DashboardConfig()) is None
