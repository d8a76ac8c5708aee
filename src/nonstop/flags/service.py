"""The flag service inside the agent: admin routes, the Unleash client API, guarded rollouts.

Admin (the agent's token-protected unix-socket API)::

    GET    /v1/flags                    list (name, enabled, rollout %, guarded rollout status)
    POST   /v1/flags                    {name, percent, stickiness, description} -> 201
    GET    /v1/flags/{name}             definition, guarded rollout, events, usage
    DELETE /v1/flags/{name}
    POST   /v1/flags/{name}/enable      POST /v1/flags/{name}/disable (the kill switch)
    POST   /v1/flags/{name}/rollout     {percent} | {steps, every, max_error_rate, min_requests}
                                        | {stop: true}
    GET    /v1/flags-document           export (Unleash client features format)
    PUT    /v1/flags-document           import: validated first; a bad one changes nothing
    GET    /v1/flags-tokens             POST /v1/flags-tokens {name} -> {token} (shown once)

Client API (``[flags] listen``, TCP; ``Authorization: <client token>``), as an Unleash server::

    GET  /api/client/features           ETag / If-None-Match -> 304
    GET  /api/client/streaming          SSE: unleash-connected (hydration), unleash-updated (deltas)
    POST /api/client/metrics            POST /api/client/register        -> 202

Metrics posts may carry, per toggle, the outcomes of work done under the flag (an extra
field Unleash servers strip; nonstop's SDK and OpenFeature hook send it)::

    "toggles": {"checkout": {"yes": 10, "no": 90,
                             "outcomes": {"yes": {"ok": 9, "error": 1},
                                          "no": {"ok": 90, "error": 0}}}}

A guarded rollout judges the flag's users on them (`nonstop.flags.rollout.judge`).

A change reaches streaming clients at once (one SSE message per committed revision) and
polling clients at their next fetch (the ETag is the store revision).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from nonstop.agent.api import json_response
from nonstop.analysis.sequential import Counts
from nonstop.config.schema import FlagsConfig
from nonstop.config.units import parse_duration
from nonstop.errors import StateError, UsageError
from nonstop.flags.limits import (
    MAX_EVERY_S,
    MAX_MIN_REQUESTS,
    MAX_TOGGLES,
    MIN_EVERY_S,
    count,
    load_json,
    name_problem,
)
from nonstop.flags.rollout import (
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_MIN_REQUESTS,
    SERVICE_FALLBACK,
    Plan,
    judge,
    new_plan,
    start_test,
)
from nonstop.flags.store import FlagStore, new_feature, rollout_percentages

ErrorRate = Callable[[float], tuple[int, int]]
Emit = Callable[[str, str], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEARTBEAT_S = 15.0


def set_percent(feature: dict[str, Any], percent: int) -> None:
    """Set the rollout of the flag's one flexibleRollout strategy."""
    strategies = [s for s in feature.get("strategies") or [] if s.get("name") == "flexibleRollout"]
    if len(strategies) != 1:
        raise UsageError(
            f'flag "{feature["name"]}" has {len(strategies)} flexibleRollout strategies; '
            "a percentage needs exactly one (edit the document and `nonstop flags import` it)"
        )
    strategies[0].setdefault("parameters", {})["rollout"] = str(percent)


def _percent(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise UsageError(f"{what}: expected a whole percentage 0..100, got {value!r}")
    return value


def delta_events(
    old: list[dict[str, Any]], new: list[dict[str, Any]], revision: int
) -> list[dict[str, Any]]:
    """Unleash delta events turning ``old`` features into ``new``."""
    before = {f["name"]: f for f in old}
    after = {f["name"]: f for f in new}
    events: list[dict[str, Any]] = [
        {"type": "feature-removed", "eventId": revision, "featureName": name, "project": "default"}
        for name in before
        if name not in after
    ]
    events += [
        {"type": "feature-updated", "eventId": revision, "feature": f}
        for name, f in after.items()
        if before.get(name) != f
    ]
    return events


class FlagService:
    def __init__(
        self, state_dir: Path, config: FlagsConfig, error_rate: ErrorRate, emit: Emit
    ) -> None:
        self.config = config
        self.error_rate = error_rate
        self.emit = emit
        self.store = FlagStore(state_dir / "state.db")
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._rollouts: dict[str, asyncio.Task[None]] = {}
        self._judging: dict[str, str] = {}  # what each running rollout's last tick judged
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.on_disabled: Callable[[str, str], None] | None = None
        """Told ``(flag, reason)`` when a guarded rollout disables its flag (notifications)."""
        self._refresh_cache()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Serve the client API when ``[flags] listen`` is set; resume guarded rollouts."""
        if self.config.listen:
            await self._start_client_api(self.config.listen)
        for name in self.store.running_rollouts():
            self.emit("info", f"flags: resuming the guarded rollout of {name}")
            self._spawn_rollout(name)

    async def close(self) -> None:
        for task in self._rollouts.values():
            task.cancel()
        await asyncio.gather(*self._rollouts.values(), return_exceptions=True)
        self._rollouts.clear()
        for queue in self._subscribers:
            queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.store.close()

    async def _start_client_api(self, listen: str) -> None:
        host, _, port_text = listen.rpartition(":")
        app = web.Application(middlewares=[self._client_auth])
        app.add_routes(
            [
                web.get("/api/client/features", self.h_features),
                web.get("/api/client/streaming", self.h_streaming),
                web.post("/api/client/metrics", self.h_metrics),
                web.post("/api/client/register", self.h_register),
            ]
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port_text))
            await site.start()
        except (OSError, ValueError) as exc:
            await runner.cleanup()
            errno = getattr(exc, "errno", None)
            reason = os.strerror(errno).lower() if errno else str(exc)
            self.emit(
                "error",
                f"flags: cannot serve the client API on {listen} ({reason}); the agent runs "
                "on without it (free the port or change [flags] listen, then restart the agent)",
            )
            return
        self._runner = runner
        addresses = runner.addresses  # the real port when listen asked for port 0
        self.port = int(addresses[0][1]) if addresses else int(port_text)
        self.emit("info", f"flags: client API on {host}:{self.port}")

    # ---------------------------------------------------------------- document cache

    def _refresh_cache(self) -> None:
        self._features = self.store.features()
        self._segments = self.store.segments()
        self._revision = self.store.revision
        doc: dict[str, Any] = {"version": 1, "features": self._features}
        if self._segments:
            doc["segments"] = self._segments
        self._body = json.dumps(doc).encode()
        self._etag = f'"{self._revision}"'

    def _changed(self) -> None:
        """After a committed change: rebuild the served document and tell streaming clients."""
        old_features, old_segments = self._features, self._segments
        self._refresh_cache()
        if old_segments != self._segments:
            message = {"events": [self._hydration()]}
        else:
            message = {"events": delta_events(old_features, self._features, self._revision)}
            if not message["events"]:  # a no-op edit (enable an enabled flag): nothing to send
                return
        for queue in self._subscribers:
            queue.put_nowait(message)

    def _hydration(self) -> dict[str, Any]:
        return {
            "type": "hydration",
            "eventId": self._revision,
            "features": self._features,
            "segments": self._segments,
        }

    # ---------------------------------------------------------------- client API

    @web.middleware
    async def _client_auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not given or not self.store.check_token(given):
            return json_response(
                {"error": "missing or wrong client token (create one: nonstop flags token create)"},
                401,
            )
        try:
            return await handler(request)
        except UsageError as exc:
            return json_response({"error": str(exc)}, 400)

    async def h_features(self, request: web.Request) -> web.Response:
        """The document; ``?project=`` and ``?namePrefix=`` filter it as Unleash does (the
        ETag stays the revision: the same query at the same revision gives the same body)."""
        headers = {"ETag": self._etag, "Cache-Control": "no-cache"}
        if self._etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=headers)
        project = request.query.get("project")
        prefix = request.query.get("namePrefix")
        body = self._body
        if project or prefix:
            features = [
                f
                for f in self._features
                if (not project or f.get("project", "default") == project)
                and (not prefix or str(f.get("name", "")).startswith(prefix))
            ]
            doc: dict[str, Any] = {"version": 1, "features": features}
            if self._segments:
                doc["segments"] = self._segments
            body = json.dumps(doc).encode()
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def h_streaming(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._subscribers.add(queue)  # before the snapshot: no change can fall in between
        try:
            await response.prepare(request)
            hydration = {"events": [self._hydration()]}
            await _send(response, "unleash-connected", hydration, self._revision)
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if message is None:
                    break
                await _send(response, "unleash-updated", message, message["events"][0]["eventId"])
        except ConnectionResetError:  # the client went away
            pass
        finally:
            self._subscribers.discard(queue)
        return response

    async def h_metrics(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        bucket = body.get("bucket") or {}
        toggles = bucket.get("toggles") if isinstance(bucket, dict) else None
        if not isinstance(toggles, dict):
            raise UsageError('metrics: "bucket.toggles" must be an object')
        if len(toggles) > MAX_TOGGLES:
            raise UsageError(f'metrics: "bucket.toggles": at most {MAX_TOGGLES} flags per post')
        known = {f["name"] for f in self._features}
        counts: dict[str, tuple[int, int]] = {}
        outcomes: dict[str, tuple[int, int, int, int]] = {}
        for name, entry in toggles.items():
            where = f'metrics: bucket.toggles["{name[:100]}"]'
            if not isinstance(entry, dict):
                raise UsageError(f"{where}: expected an object with yes/no counts")
            yes = count(entry.get("yes", 0), f"{where}.yes")
            no = count(entry.get("no", 0), f"{where}.no")
            reported = _outcomes(entry.get("outcomes"), f"{where}.outcomes")
            if name in known:  # counts for flags we do not serve are not kept (bounded table)
                counts[name] = (yes, no)
                if reported is not None and any(reported):
                    outcomes[name] = reported
        if counts:
            self.store.add_usage(counts)
        if outcomes:
            self.store.add_outcomes(outcomes)
        return json_response({"accepted": len(counts)}, 202)

    async def h_register(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        app_name = body.get("appName")
        if not isinstance(app_name, str) or not app_name:
            raise UsageError('register: "appName" is required')
        instance = str(body.get("instanceId") or "")
        self.store.register_client(app_name, instance, str(body.get("sdkVersion") or ""))
        return json_response({"registered": app_name}, 202)

    # ---------------------------------------------------------------- admin API

    def admin_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/flags", self.a_list),
            web.post("/v1/flags", self.a_create),
            web.get("/v1/flags-document", self.a_export),
            web.put("/v1/flags-document", self.a_import),
            web.get("/v1/flags-tokens", self.a_tokens),
            web.post("/v1/flags-tokens", self.a_token_create),
            web.get("/v1/flags/{name}", self.a_show),
            web.delete("/v1/flags/{name}", self.a_delete),
            web.post("/v1/flags/{name}/enable", self.a_enable),
            web.post("/v1/flags/{name}/disable", self.a_disable),
            web.post("/v1/flags/{name}/rollout", self.a_rollout),
        ]

    def summary(self, feature: Mapping[str, Any]) -> dict[str, Any]:
        percentages = rollout_percentages(feature)
        guarded = self.store.rollout(feature["name"])
        return {
            "name": feature["name"],
            "enabled": bool(feature.get("enabled")),
            "rollout": percentages[0] if len(percentages) == 1 else None,
            "strategies": len(feature.get("strategies") or []),
            "variants": len(feature.get("variants") or []),
            "guarded_rollout": guarded["status"] if guarded else None,
        }

    async def a_list(self, request: web.Request) -> web.Response:
        return json_response([self.summary(f) for f in self._features])

    async def a_show(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        feature = self.store.get(name)
        data = self.summary(feature)
        data["definition"] = feature
        guarded = self.store.rollout(name)
        if guarded is not None and guarded["status"] == "running":
            guarded["judging"] = self._judging.get(name, "")
        data["guarded"] = guarded
        ok, errors, unflagged_ok, unflagged_errors = self.store.outcomes(name)
        data["outcomes"] = {
            "flagged": {"ok": ok, "error": errors},
            "unflagged": {"ok": unflagged_ok, "error": unflagged_errors},
        }
        data["events"] = self.store.events(name)
        data["usage"] = self.store.usage().get(name)
        return json_response(data)

    async def a_create(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        name = body.get("name")
        problem = name_problem(name)
        if problem is not None:
            raise UsageError(f"flag name: {problem}")
        assert isinstance(name, str)
        percent = _percent(body.get("percent", 0), "--percent")
        stickiness = body.get("stickiness") or "default"
        if not isinstance(stickiness, str):
            raise UsageError(f"--stickiness: expected a context field name, got {stickiness!r}")
        description = body.get("description") or ""
        if not isinstance(description, str) or len(description) > 1000:
            raise UsageError("--description: expected text of at most 1000 characters")
        feature = new_feature(name, percent, stickiness, description)
        self.store.put(feature, create=True)
        self._record(name, f"created at {percent}% (stickiness {stickiness})")
        self._changed()
        return json_response(self.summary(feature), 201)

    async def a_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self._cancel_rollout(name)
        self.store.delete(name)
        self._record(name, "deleted")
        self._changed()
        return json_response({"deleted": name})

    async def a_enable(self, request: web.Request) -> web.Response:
        return json_response(self._switch(request.match_info["name"], True, "enabled"))

    async def a_disable(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self._stop_rollout(name, "stopped: the flag was disabled by hand"):
            self._record(name, "guarded rollout stopped (flag disabled)")
        return json_response(self._switch(name, False, "disabled (kill switch)"))

    def _switch(self, name: str, on: bool, what: str) -> dict[str, Any]:
        feature = self.store.update(name, lambda f: f.__setitem__("enabled", on))
        self._record(name, what, "warning" if not on else "info")
        self._changed()
        return self.summary(feature)

    async def a_rollout(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await read_body(request)
        self.store.get(name)  # unknown flag: a clear 400 before anything else
        _rollout_body(body)
        if body.get("stop") is True:
            if not self._stop_rollout(name, "stopped by hand"):
                raise StateError(f'flag "{name}" has no guarded rollout running')
            self._record(name, "guarded rollout stopped by hand")
            return json_response(self.summary(self.store.get(name)))
        running = self.store.rollout(name)
        if running and running["status"] == "running":
            raise StateError(
                f'a guarded rollout of "{name}" is running; stop it first '
                f"(nonstop flags rollout {name} --stop)"
            )
        if "steps" in body:
            return json_response(self._start_guarded(name, body), 202)
        percent = _percent(body.get("percent"), "--percent")
        feature = self.store.update(name, lambda f: set_percent(f, percent))
        self._record(name, f"rollout set to {percent}%")
        self._changed()
        return json_response(self.summary(feature))

    async def a_export(self, request: web.Request) -> web.Response:
        return json_response(self.store.document())

    async def a_import(self, request: web.Request) -> web.Response:
        body = await read_body(request, "import")
        document = body.get("document", body)
        if not isinstance(document, dict):
            raise UsageError('import: expected a JSON object with "features"')
        running = self.store.running_rollouts()
        names = {f.get("name") for f in document.get("features") or [] if isinstance(f, dict)}
        revision = self.store.replace_document(document)
        for name in running:
            if name not in names:
                self._cancel_rollout(name)
        self._changed()
        self.emit("info", f"flags: imported {len(names)} flags (revision {revision})")
        return json_response({"imported": len(names), "revision": revision})

    async def a_tokens(self, request: web.Request) -> web.Response:
        return json_response([t.to_dict() for t in self.store.tokens()])

    async def a_token_create(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        name = body.get("name") or "default"
        if not isinstance(name, str):
            raise UsageError(f"--name: expected text, got {name!r}")
        token = self.store.create_token(name)
        self.emit("info", f'flags: client token "{name}" created')
        return json_response({"name": name, "token": token}, 201)

    def _record(self, name: str, message: str, level: str = "info") -> None:
        self.store.add_event(name, message, level)
        self.emit(level, f"flag {name}: {message}")

    # ---------------------------------------------------------------- guarded rollouts

    def _start_guarded(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        steps = body.get("steps")
        if not isinstance(steps, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in steps
        ):
            raise UsageError(f"--steps: expected whole percentages such as 1,5,25, got {steps!r}")
        try:
            every = parse_duration(body.get("every", "10m"))
        except ValueError as exc:
            raise UsageError(f"--every: {exc}") from None
        if not MIN_EVERY_S <= every <= MAX_EVERY_S:
            raise UsageError(f"--every: expected 100ms to 30d, got {body.get('every')!r}")
        rate = body.get("max_error_rate", DEFAULT_MAX_ERROR_RATE)
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
            raise UsageError(f"--max-error-rate: expected a number 0..1, got {rate!r}")
        min_requests = body.get("min_requests", DEFAULT_MIN_REQUESTS)
        if (
            isinstance(min_requests, bool)
            or not isinstance(min_requests, int)
            or not 0 <= min_requests <= MAX_MIN_REQUESTS
        ):
            raise UsageError(
                f"--min-requests: expected a whole number 0..{MAX_MIN_REQUESTS}, "
                f"got {min_requests!r}"
            )
        plan = new_plan(steps, every, rate, min_requests, time.time())
        outcomes = self._outcome_counts(name)
        plan = replace(plan, test=start_test(outcomes), step_flagged=outcomes.canary_requests)
        feature = self.store.get(name)
        set_percent(feature, plan.percent)  # checks the flag can take a percentage
        # The plan is durable before the flag changes: a restart resumes it (invariant 4).
        self.store.save_rollout(name, plan.to_dict(), "running", "")
        feature["enabled"] = True
        self.store.put(feature)
        self._changed()
        steps_text = ",".join(str(s) for s in plan.steps)
        self._record(name, f"guarded rollout started: steps {steps_text} every {every:g}s")
        self._spawn_rollout(name)
        return self.summary(feature)

    def _spawn_rollout(self, name: str) -> None:
        self._cancel_rollout(name)
        self._rollouts[name] = asyncio.create_task(self._drive(name))

    def _cancel_rollout(self, name: str) -> None:
        task = self._rollouts.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _stop_rollout(self, name: str, reason: str) -> bool:
        row = self.store.rollout(name)
        if row is None or row["status"] != "running":
            return False
        self._cancel_rollout(name)
        self.store.save_rollout(name, row["plan"], "stopped", reason)
        return True

    async def _drive(self, name: str) -> None:
        """Tick the plan until it completes, aborts or is stopped."""
        try:
            await self._drive_steps(name)
        except Exception as exc:  # a deleted flag mid-tick, a store error: say so, stop
            self.emit("error", f"flag {name}: guarded rollout stopped by an error: {exc}")

    async def _drive_steps(self, name: str) -> None:
        while True:
            row = self.store.rollout(name)
            if row is None or row["status"] != "running":
                return
            plan = Plan.from_dict(row["plan"])
            self._reconcile_percent(name, plan.percent)
            outcomes = self._outcome_counts(name)
            errors, requests = 0, 0
            if plan.test is None or plan.test.total == Counts():  # the fallback may be needed
                try:
                    errors, requests = self.error_rate(plan.step_started_at)
                except Exception as exc:  # no numbers this tick: judge nothing, try again
                    self.emit("warning", f"flag {name}: error rate unavailable ({exc})")
            decision = judge(plan, time.time(), outcomes, errors, requests)
            self._judging[name] = decision.status
            if decision.plan.basis != plan.basis:
                self._record(name, _basis_message(decision.plan.basis))
            if decision.action == "abort":
                self.store.save_rollout(name, decision.plan.to_dict(), "failed", decision.reason)
                self.store.update(name, lambda f: f.__setitem__("enabled", False))
                self._changed()
                self._record(name, f"disabled automatically: {decision.reason}", "error")
                if self.on_disabled is not None:
                    self.on_disabled(name, decision.reason)
                return
            if decision.action == "complete":
                self.store.save_rollout(name, decision.plan.to_dict(), "completed", decision.reason)
                self._record(name, decision.reason)
                return
            if decision.action == "advance":
                self.store.save_rollout(name, decision.plan.to_dict(), "running", "")
                self._reconcile_percent(name, decision.plan.percent)
                self._record(name, f"guarded rollout: {decision.reason}")
            elif decision.plan != plan:  # the test saw new outcomes: durable before the next
                self.store.save_rollout(name, decision.plan.to_dict(), "running", "")
            await asyncio.sleep(min(1.0, max(0.02, plan.every / 10)))

    def _outcome_counts(self, name: str) -> Counts:
        """The flag's outcome totals as the sequential test's counts (flagged = canary)."""
        ok, errors, unflagged_ok, unflagged_errors = self.store.outcomes(name)
        return Counts(ok + errors, errors, unflagged_ok + unflagged_errors, unflagged_errors)

    def _reconcile_percent(self, name: str, percent: int) -> None:
        feature = self.store.get(name)
        if rollout_percentages(feature) != [str(percent)]:
            self.store.update(name, lambda f: set_percent(f, percent))
            self._changed()


async def read_body(request: web.Request, where: str = "request body") -> dict[str, Any]:
    """The JSON object of a request, read within `nonstop.flags.limits` (size, depth, integer
    digits): every bad body is a 400 naming ``where``, never a 500."""
    if not request.can_read_body:
        return {}
    body = load_json(await request.read(), where)
    if not isinstance(body, dict):
        raise UsageError(f"{where}: expected a JSON object")
    return body


ROLLOUT_FORMS = (
    frozenset({"stop"}),
    frozenset({"percent"}),
    frozenset({"steps", "every", "max_error_rate", "min_requests"}),
)


def _rollout_body(body: Mapping[str, Any]) -> None:
    """Exactly one form: ``{stop: true}``, ``{percent}`` or ``{steps, ...}``; nothing else."""
    keys = set(body)
    if "stop" in body and body["stop"] is not True:
        raise UsageError(f'rollout: "stop" must be true, got {body["stop"]!r}')
    form = next((f for f in ROLLOUT_FORMS if keys and keys <= f), None)
    if form is None or (form == ROLLOUT_FORMS[2] and "steps" not in keys):
        raise UsageError(
            'rollout: expected {"stop": true}, {"percent": N} or '
            f'{{"steps": [...], "every", "max_error_rate", "min_requests"}}, got keys '
            f"{sorted(keys)}"
        )


async def _send(response: web.StreamResponse, event: str, data: Any, event_id: int) -> None:
    payload = f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n"
    await response.write(payload.encode())


def _basis_message(basis: str) -> str:
    if basis == "service":
        return f"guarded rollout: {SERVICE_FALLBACK}"
    return "guarded rollout: judging the flag's users against the others on reported outcomes"


def _outcomes(value: Any, where: str) -> tuple[int, int, int, int] | None:
    """``{"yes": {"ok", "error"}, "no": {"ok", "error"}}`` -> (flagged ok, flagged errors,
    unflagged ok, unflagged errors); each a count 0..2^31-1; absent parts are 0."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UsageError(f'{where}: expected an object like {{"yes": {{"ok": 9, "error": 1}}}}')
    result: list[int] = []
    for group in ("yes", "no"):
        part = value.get(group, {})
        if not isinstance(part, dict):
            raise UsageError(f"{where}.{group}: expected an object with ok/error counts")
        result += [count(part.get(k, 0), f"{where}.{group}.{k}") for k in ("ok", "error")]
    return result[0], result[1], result[2], result[3]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}
