"""The dashboard's HTTP server: its own listener (``[dashboard] listen``), its own aiohttp app.

    GET  /login?token=T           the one-time link `nonstop dashboard` prints: a session cookie
    POST /logout                  ends the session (CSRF token needed)
    GET  / /rollouts/{id} /history /flags /migrations      the page (one HTML shell)
    GET  /static/{name}           CSS, JS, the icon: package data, nothing from the internet
    GET  /api/session             the CSRF token for this session
    GET  /api/overview | /api/history | /api/flags | /api/migrations | /api/rollouts/{id}
    GET  /api/stream?page=...     server-sent events: the page's data whenever it changes
    POST /api/actions/{action}    promote | promote_full | pause | resume | abort | rollback

Everything but /login needs a session (401 without: a page that says how to log in, or JSON
for /api); a POST needs the session's CSRF token in ``X-CSRF-Token`` too (403 without), and an
``Origin``, when the browser sends one, must be this server's. Routes added with
:class:`TokenRoute` (``/metrics``) take a bearer token instead of a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from nonstop.agent.api import Handler, answer_errors, error_response, int_value, json_response
from nonstop.agent.dashboard import sse, views
from nonstop.agent.dashboard.auth import LoginTokens, Session, Sessions
from nonstop.config.validate import host_port
from nonstop.engine.health import describe
from nonstop.errors import NonstopError, StateError, UsageError

if TYPE_CHECKING:
    from nonstop.config.schema import DashboardConfig
    from nonstop.store import RolloutRow

COOKIE = "nonstop_session"
ACTIONS = ("promote", "promote_full", "pause", "resume", "abort", "rollback")
PAGES = ("/", "/history", "/flags", "/migrations")
CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOGIN_HINT = "log in with `nonstop dashboard` (it prints a one-time link)"


@dataclass(frozen=True, slots=True)
class TokenRoute:
    """A route served on the dashboard's listener behind ``Authorization: Bearer <token>``
    instead of a session (a Prometheus scrape, say)."""

    route: web.RouteDef
    token: str


def static_text(name: str) -> bytes:
    return resources.files("nonstop.agent.dashboard").joinpath("static", name).read_bytes()


def static_names() -> frozenset[str]:
    folder = resources.files("nonstop.agent.dashboard").joinpath("static")
    return frozenset(entry.name for entry in folder.iterdir() if entry.is_file())


class Dashboard:
    def __init__(
        self,
        agent: views.AgentView,
        settings: DashboardConfig,
        token_routes: Sequence[TokenRoute] = (),
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.logins = LoginTokens(settings.login_ttl)
        self.sessions = Sessions(settings.session_ttl)
        self.charts = views.ChartCache(agent.stats)
        self.stop = asyncio.Event()
        self.base_url = ""
        self._token_routes = tuple(token_routes)
        self._runner: web.AppRunner | None = None
        self._cache: dict[str, tuple[float, Any]] = {}
        self._statics = static_names()

    # -- listener ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind ``[dashboard] listen``; a port in use stops the agent's start, as the API's."""
        assert self.settings.listen is not None
        parsed = host_port(self.settings.listen)
        assert parsed is not None  # the config schema checked it
        host, port = parsed
        tls = self._tls()
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StateError(
                f"the dashboard cannot listen on {self.settings.listen}: {describe(exc)} "
                "(dashboard.listen in nonstop.toml; port 0 takes any free port)"
            ) from exc
        self._runner = runner
        self.base_url = self._url(host, _bound_port(site, port))

    def _tls(self) -> ssl.SSLContext | None:
        if self.settings.tls_cert is None or self.settings.tls_key is None:
            return None
        # Relative paths are the project's, like every path in nonstop.toml.
        cert, key = (
            self.agent.paths.project / p for p in (self.settings.tls_cert, self.settings.tls_key)
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"dashboard.tls_cert / tls_key: cannot load {cert} / {key}: {describe(exc)}"
            ) from exc
        return context

    @property
    def tls(self) -> bool:
        return self.settings.tls_cert is not None

    def _url(self, host: str, port: int) -> str:
        address = ipaddress.ip_address(host)
        if address.is_unspecified:
            host = socket.getfqdn()
        elif address.version == 6:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    async def close(self) -> None:
        self.stop.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def login_url(self) -> dict[str, Any]:
        """A one-time login link (for `nonstop dashboard`, over the agent's API)."""
        token = self.logins.issue(time.time())
        return {
            "url": f"{self.base_url}/login?token={token}",
            "base_url": self.base_url,
            "expires_in": self.settings.login_ttl,
        }

    # -- the application -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.add_routes(
            [
                web.get("/login", self.h_login),
                web.post("/logout", self.h_logout),
                *(web.get(path, self.h_page) for path in PAGES),
                web.get("/rollouts/{id}", self.h_page),
                web.get("/static/{name}", self.h_static),
                web.get("/api/session", self.h_session),
                web.get("/api/overview", self._json(self.overview)),
                web.get("/api/history", self._json(self.history)),
                web.get("/api/flags", self._json(self.flags)),
                web.get("/api/migrations", self._json(self.migrations)),
                web.get("/api/rollouts/{id}", self.h_rollout),
                web.get("/api/stream", self.h_stream),
                web.post("/api/actions/{action}", self.h_action),
            ]
        )
        for extra in self._token_routes:
            route = extra.route
            assert isinstance(route, web.RouteDef)
            app.router.add_route(route.method, route.path, _bearer(extra.token, route.handler))
        return app

    def _open(self, path: str) -> bool:
        return path == "/login" or any(t.route.path == path for t in self._token_routes)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Session (and CSRF for a POST) first, then the handler; errors become JSON."""
        refused = None if self._open(request.path) else self._refuse(request)
        response = refused or await self._handle(request, handler)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def _refuse(self, request: web.Request) -> web.StreamResponse | None:
        session = self.sessions.touch(request.cookies.get(COOKIE), time.time())
        if session is None:
            if request.path.startswith("/api/") or request.method != "GET":
                return error_response(f"not logged in: {LOGIN_HINT}", 401)
            return _login_page(401, "Not logged in", LOGIN_HINT)
        request["session"] = session
        if request.method == "POST":
            return self._csrf_refusal(request, session)
        return None

    def _csrf_refusal(self, request: web.Request, session: Session) -> web.Response | None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != self.base_url and origin != _origin_of(request):
            return error_response(f"cross-origin request from {origin} refused", 403)
        if not session.csrf_ok(request.headers.get("X-CSRF-Token")):
            return error_response("missing or wrong CSRF token (reload the page)", 403)
        return None

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        return await answer_errors(request, handler, "the dashboard")

    # -- login ---------------------------------------------------------------------------------

    async def h_login(self, request: web.Request) -> web.Response:
        if not self.logins.redeem(request.query.get("token", ""), time.time()):
            return _login_page(
                401, "This login link is used or expired", f"Get a new one: {LOGIN_HINT}"
            )
        session = self.sessions.create(time.time())
        # A page that moves on by itself, rather than a redirect: the next request is then
        # made by this origin's own page, so the SameSite=Strict cookie goes with it.
        response = web.Response(
            text=_page("Logged in", '<meta http-equiv="refresh" content="0; url=/">'),
            content_type="text/html",
        )
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="Strict",
            secure=self.tls,
            path="/",
            max_age=int(self.settings.session_ttl),
        )
        return response

    async def h_logout(self, request: web.Request) -> web.Response:
        session: Session = request["session"]
        self.sessions.end(session.id)
        response = json_response({"logged_out": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def h_session(self, request: web.Request) -> web.Response:
        session: Session = request["session"]
        return json_response({"csrf": session.csrf, "base_url": self.base_url})

    # -- pages and assets ----------------------------------------------------------------------

    async def h_page(self, request: web.Request) -> web.Response:
        return web.Response(body=static_text("index.html"), content_type="text/html")

    async def h_static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        suffix = name[name.rfind(".") :]
        if name not in self._statics or suffix not in CONTENT_TYPES:
            return error_response(f"no asset {name!r}", 404)
        return web.Response(body=static_text(name), content_type=CONTENT_TYPES[suffix])

    # -- data ----------------------------------------------------------------------------------

    def _json(self, produce: Callable[[], Awaitable[Any]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return json_response(await produce())

        return handler

    async def _cached(self, key: str, produce: Callable[[], Awaitable[Any]], ttl: float) -> Any:
        """One computation per ``ttl`` however many pages watch it."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is None or now - hit[0] >= ttl:
            hit = self._cache[key] = (now, await produce())
        return hit[1]

    async def overview(self) -> Any:
        async def produce() -> Any:
            store = self.agent.engine.store
            events = store.events(limit=20)
            return views.overview(await self.agent.status_data(), self.agent.stats, events)

        return await self._cached("overview", produce, 0.5)

    async def history(self) -> Any:
        async def produce() -> Any:
            store = self.agent.engine.store
            return views.history(store.rollouts(200), store.releases())

        return await self._cached("history", produce, 0.5)

    async def flags(self) -> Any:
        async def produce() -> Any:
            return {"flags": views.flag_rows(self.agent.flags)}

        return await self._cached("flags", produce, 0.5)

    async def migrations(self) -> Any:
        async def produce() -> Any:
            return await asyncio.to_thread(views.migrations, self.agent)

        return await self._cached("migrations", produce, 5.0)

    async def rollout(self, rollout_id: int, *, series: bool = True) -> dict[str, Any]:
        from nonstop.agent.daemon import analysis_report, rollout_standing

        store = self.agent.engine.store
        row = store.rollout(rollout_id)
        if row is None:
            raise UsageError(f"no rollout {rollout_id}")
        events = store.events(rollout_id=rollout_id, limit=2000)
        standing, not_judged = rollout_standing(self.agent.engine, row)
        data: dict[str, Any] = {
            "rollout": {k: v for k, v in row.to_dict().items() if k != "state"},
            "state": row.state,
            "verdict": views.verdict_of(row, standing),
            "journal": store.journal(rollout_id),
            "events": events,
            "steps": views.step_boundaries(events),
            "plan": self._plan(row),
            "analysis": analysis_report(row, standing, not_judged),
        }
        if series:  # a long rollout's first load takes a while: off the event loop
            data["charts"] = await asyncio.to_thread(
                views.chart_series, self.charts, row, time.time()
            )
        return data

    def _plan(self, row: RolloutRow) -> list[dict[str, Any]] | None:
        try:
            return views.canary_plan(self.agent.engine.config_of(row.candidate), row)
        except NonstopError:  # the release's copy was pruned: no plan to show
            return None

    async def h_rollout(self, request: web.Request) -> web.Response:
        rollout_id = int_value(request.match_info["id"], "rollout id")
        if self.agent.engine.store.rollout(rollout_id) is None:
            return error_response(f"no rollout {rollout_id}", 404)
        return json_response(await self.rollout(rollout_id))

    # -- live ----------------------------------------------------------------------------------

    async def h_stream(self, request: web.Request) -> web.StreamResponse:
        produce = self._producer(request.query.get("page", "overview"), request.query.get("id"))
        session: Session = request["session"]

        def alive() -> bool:
            return self.sessions.touch(session.id, time.time()) is not None

        return await sse.serve(request, produce, self.stop, alive)

    def _producer(self, page: str, rollout: str | None) -> sse.Produce:
        simple = {
            "overview": self.overview,
            "history": self.history,
            "flags": self.flags,
            "migrations": self.migrations,
        }
        if page in simple:
            source = simple[page]

            async def produce() -> dict[str, Any]:
                return {page: await source()}

            return produce
        if page == "rollout" and rollout is not None:
            rollout_id = int_value(rollout, "id")
            return lambda: self._rollout_events(rollout_id)
        raise UsageError(f"stream: unknown page {page!r} (overview, rollout&id=N, history, ...)")

    async def _rollout_events(self, rollout_id: int) -> dict[str, Any]:
        """The rollout without its charts, and the charts' last minute (the page merges it)."""
        data = await self.rollout(rollout_id, series=False)
        row = self.agent.engine.store.rollout(rollout_id)
        assert row is not None
        charts = views.chart_series(self.charts, row, time.time())
        recent = charts["until"] - 60
        series = charts["series"].items()
        charts["series"] = {release: [p for p in s if p[0] >= recent] for release, s in series}
        return {"rollout": data, "points": charts}

    # -- actions -------------------------------------------------------------------------------

    async def h_action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in ACTIONS:
            raise UsageError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")
        if not self.agent.recovered.is_set():
            raise StateError("the agent is still starting: try again in a moment")
        engine = self.agent.engine
        row = await engine.rollback() if action == "rollback" else engine.command(action)
        self._cache.clear()
        what = action.replace("_", " ")
        return json_response(
            {"ok": True, "action": action, "rollout": row.id, "message": f"{what} requested"}
        )


def _bearer(token: str, handler: Any) -> Handler:
    expected = f"Bearer {token}".encode()

    async def guarded(request: web.Request) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return error_response("missing or wrong bearer token", 401)
        response: web.StreamResponse = await handler(request)
        return response

    return guarded


def _bound_port(site: web.TCPSite, asked: int) -> int:
    """The port a site bound (``asked`` unless that was 0: any free port)."""
    sockets: list[socket.socket] = list(getattr(site._server, "sockets", None) or [])
    with contextlib.suppress(IndexError, OSError):
        return int(sockets[0].getsockname()[1])
    return asked


def _origin_of(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _page(title: str, head: str = "", body: str = "") -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title} - nonstop"
        f"</title>{head}</head><body><h1>{title}</h1>{body}</body></html>"
    )


def _login_page(status: int, title: str, text: str) -> web.Response:
    from html import escape

    body = f"<p>{escape(text)}</p>"
    return web.Response(text=_page(title, body=body), status=status, content_type="text/html")
