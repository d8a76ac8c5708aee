"""The Python SDK: local evaluation with the engine, kept fresh from an Unleash-compatible
server (nonstop's agent, or Unleash itself).

Thread-based, so one `Client` serves sync apps (Flask, Django) and async ones alike:
``is_enabled`` and ``get_variant`` only read an immutable engine the background threads
swap, so they never block on I/O and are safe to call from any thread or coroutine.

Background threads (daemon threads, stopped by `close`):

- ``poll``: ``GET /client/features`` every ``refresh_interval`` with ``If-None-Match``
  (a 304 costs one small request), ``POST /client/register`` once, and
  ``POST /client/metrics`` every ``metrics_interval`` (and at `close`);
- ``stream`` (``stream=True``): ``GET /client/streaming``, Server-Sent Events; the
  agent sends a change as soon as it is committed, so a kill switch lands within
  milliseconds instead of a refresh interval. It reconnects with backoff; polling
  carries on meanwhile, so a broken stream costs freshness, never correctness.

Outcomes: ``record_outcome(flag, enabled, ok)``, or ``with client.guard(flag) as enabled:``
(an error when the block raises), count how the work done under an evaluation ended. They
travel in the metrics post, per toggle, as ``"outcomes": {"yes": {"ok", "error"}, "no":
{...}}`` (Unleash strips the field; nonstop's agent judges guarded rollouts on it).

Both channels carry the server's revision (the ETag, the SSE event id); an answer older
than what is loaded is ignored, so a slow poll cannot undo a streamed kill switch.

Nothing here raises to the caller after construction: an unreachable server leaves the
last good state (or the bootstrap, or nothing: every flag gives its default).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from nonstop import __version__
from nonstop.errors import UsageError
from nonstop.flags.engine import FlagEngine

log = logging.getLogger("nonstop.flags")

EMPTY_DOCUMENT: dict[str, Any] = {"version": 1, "features": []}
_REVISION = re.compile(r'^(?:W/)?"?(\d+)"?$')


def _value(counter: itertools.count[int]) -> int:
    """How many times ``next`` was called on a fresh ``itertools.count()``: ``count(7)``."""
    return int(repr(counter)[6:-1])


def api_base(url: str) -> str:
    """``http://host:4242`` or ``http://host:4242/api`` -> ``http://host:4242/api``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"flags client url: expected http(s)://host:port[/api], got {url!r}")
    base = url.rstrip("/")
    return base if base.endswith("/api") else f"{base}/api"


def revision_of(etag: str) -> int | None:
    """The agent's ETags are its store revision (``"42"``); other servers' are opaque."""
    match = _REVISION.match(etag.strip())
    return int(match.group(1)) if match else None


def load_bootstrap(bootstrap: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(bootstrap, Mapping):
        return bootstrap
    try:
        data = json.loads(Path(bootstrap).read_text())
    except OSError as exc:
        raise UsageError(f"bootstrap {bootstrap}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"bootstrap {bootstrap}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f'bootstrap {bootstrap}: expected a JSON object with "features"')
    return data


class RawFlags:
    """The raw definitions beside the engine, to know which flags read ``appName`` or
    ``environment``: only those need the client's defaults merged into the context (a dict
    copy per call that would otherwise double the cost of a simple flag)."""

    def __init__(self) -> None:
        self.features: dict[Any, Any] = {}
        self.segments: dict[Any, Any] = {}

    def load(self, document: Mapping[str, Any]) -> None:
        self.features, self.segments = {}, {}
        if isinstance(document, Mapping) and "events" in document:
            self.apply(document.get("events"))
            return
        self._hydrate(document.get("features"), document.get("segments"))

    def _hydrate(self, features: Any, segments: Any) -> None:
        for feature in features if isinstance(features, list) else []:
            if isinstance(feature, Mapping):
                self.features[feature.get("name")] = feature
        for segment in segments if isinstance(segments, list) else []:
            if isinstance(segment, Mapping):
                self.segments[segment.get("id")] = segment

    def apply(self, events: Any) -> None:
        for event in events if isinstance(events, list) else []:
            if not isinstance(event, Mapping):
                continue
            kind = event.get("type")
            if kind == "hydration":
                self.features, self.segments = {}, {}
                self._hydrate(event.get("features"), event.get("segments"))
            elif kind == "feature-updated" and isinstance(event.get("feature"), Mapping):
                self.features[event["feature"].get("name")] = event["feature"]
            elif kind == "feature-removed":
                self.features.pop(event.get("featureName"), None)
            elif kind == "segment-updated" and isinstance(event.get("segment"), Mapping):
                self.segments[event["segment"].get("id")] = event["segment"]
            elif kind == "segment-removed":
                self.segments.pop(event.get("segmentId"), None)

    def reading_defaults(self) -> frozenset[Any]:
        """Names of the flags that read ``appName`` or ``environment``: in a constraint,
        a stickiness, a segment they use, or a flag they depend on. A mention anywhere in
        the flag counts (its name too): a false alarm only costs the merge."""
        if any(_mentions_defaults(seg) for seg in self.segments.values()):
            direct = {name for name, f in self.features.items() if _uses_segments(f)}
        else:
            direct = set()
        direct |= {name for name, f in self.features.items() if _mentions_defaults(f)}
        reading, grew = set(direct), True
        while grew:  # a flag depending on one that reads them reads them too
            grew = False
            for name, feature in self.features.items():
                if name not in reading and _parents(feature) & reading:
                    reading.add(name)
                    grew = True
        return frozenset(reading)


def _mentions_defaults(definition: Any) -> bool:
    try:
        text = json.dumps(definition)
    except (TypeError, ValueError):
        return True
    return '"appName"' in text or '"environment"' in text


def _uses_segments(feature: Any) -> bool:
    strategies = feature.get("strategies") if isinstance(feature, Mapping) else None
    return any(
        isinstance(s, Mapping) and bool(s.get("segments"))
        for s in (strategies if isinstance(strategies, list) else [])
    )


def _parents(feature: Any) -> set[Any]:
    deps = feature.get("dependencies") if isinstance(feature, Mapping) else None
    return {
        d.get("feature") for d in (deps if isinstance(deps, list) else []) if isinstance(d, Mapping)
    }


class Client:
    """Feature flags for one app. Use as a context manager, or call `close`."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        app_name: str = "default",
        instance_id: str | None = None,
        environment: str = "default",
        refresh_interval: float = 15.0,
        metrics_interval: float = 60.0,
        bootstrap: str | Path | Mapping[str, Any] | None = None,
        stream: bool = True,
        request_timeout: float = 10.0,
        disable_metrics: bool = False,
    ) -> None:
        self._api = api_base(url)
        self.app_name = app_name
        self.instance_id = instance_id or f"{socket.gethostname()}-{id(self):x}"
        self.environment = environment
        self.refresh_interval = refresh_interval
        self.metrics_interval = metrics_interval
        self._timeout = request_timeout
        self._headers = {
            "Authorization": token,
            "Unleash-AppName": app_name,
            "Unleash-InstanceId": self.instance_id,
            "Unleash-Sdk": f"nonstop-python:{__version__}",
            "User-Agent": f"nonstop-flags/{__version__}",
        }
        self._engine_options: dict[str, Any] = {
            "strict": False,
            "rng": random.Random(),
            "clock": time.time,
            "hostname": socket.gethostname(),
        }
        self._default_context = {"appName": app_name, "environment": environment}
        self._raw = RawFlags()
        initial = load_bootstrap(bootstrap) if bootstrap is not None else EMPTY_DOCUMENT
        self._raw.load(initial)
        # (engine, flags that need the defaults merged in) swapped as one: read once per call
        self._state = (
            FlagEngine.from_unleash(initial, **self._engine_options),
            self._raw.reading_defaults(),
        )
        self._revision = -1
        self._etag = ""
        self._swap = threading.Lock()  # orders engine swaps by revision
        # Metrics without a lock on the hot path: one cumulative `itertools.count` per
        # (flag, yes|no) and (flag, variant); `next()` on it is atomic under the GIL, so
        # concurrent evaluations lose no count. A bucket is the difference from what the
        # server last accepted, so a failed send is simply part of the next one.
        self._yes: dict[str, itertools.count[int]] = {}
        self._no: dict[str, itertools.count[int]] = {}
        self._variant_counts: dict[tuple[str, str], itertools.count[int]] = {}
        self._outcomes: dict[tuple[str, str, str], itertools.count[int]] = {}
        self._sent: dict[Any, int] = {}
        self._bucket_start = time.time()
        self._metrics = not disable_metrics
        self._stop = threading.Event()
        self.ready = threading.Event()
        """Set once state came from the server (a fetch or the stream's hydration)."""
        self.streaming = threading.Event()
        """Set while the SSE stream is connected."""
        self._stream_conn: http.client.HTTPConnection | None = None
        self._threads = [threading.Thread(target=self._poll_loop, name="flags-poll", daemon=True)]
        if stream:
            self._threads.append(
                threading.Thread(target=self._stream_loop, name="flags-stream", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    # ---------------------------------------------------------------- evaluation

    def context(self, context: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """What evaluations see: ``appName`` and ``environment`` from the client, then yours."""
        if not context:
            return self._default_context
        return {**self._default_context, **context}

    def is_enabled(
        self, name: str, context: Mapping[str, Any] | None = None, default: bool = False
    ) -> bool:
        """Is ``name`` on for ``context``? Unknown flags and any failure give ``default``."""
        engine, merge = self._state
        try:
            if name in merge:  # only for flags that read appName or environment
                ctx = {**self._default_context, **context} if context else self._default_context
                result = engine.is_enabled(name, ctx, default)
            else:
                result = engine.is_enabled(name, context, default)
        except Exception:
            return default
        if self._metrics:
            counters = self._yes if result else self._no
            counter = counters.get(name)
            if counter is None:
                counter = counters.setdefault(name, itertools.count())
            next(counter)
        return result

    def get_variant(self, name: str, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Unleash's variant: ``{"name", "payload"?, "enabled", "feature_enabled"}``."""
        try:
            variant = self._state[0].get_variant(name, self.context(context))
            self._count(name, bool(variant["feature_enabled"]), variant["name"])
            return variant
        except Exception:
            return {"name": "disabled", "enabled": False, "feature_enabled": False}

    @property
    def engine(self) -> FlagEngine:
        """The engine in use now (for `resolve`, as the OpenFeature provider does)."""
        return self._state[0]

    def count(self, name: str, enabled: bool, variant: str | None = None) -> None:
        """Count one evaluation made through `engine` directly (metrics)."""
        self._count(name, enabled, variant)

    def _count(self, name: str, enabled: bool, variant: str | None) -> None:
        if not self._metrics:
            return
        next((self._yes if enabled else self._no).setdefault(name, itertools.count()))
        if variant is not None:
            next(self._variant_counts.setdefault((name, variant), itertools.count()))

    # ---------------------------------------------------------------- outcomes

    def record_outcome(self, name: str, enabled: bool, ok: bool) -> None:
        """Count how the work done under one evaluation of ``name`` ended: ``enabled`` is
        what the evaluation answered, ``ok`` False for an error. A guarded rollout compares
        the flagged users' errors (enabled) with the others' (decision 0380)."""
        if not self._metrics:
            return
        key = (name, "yes" if enabled else "no", "ok" if ok else "error")
        next(self._outcomes.setdefault(key, itertools.count()))

    @contextlib.contextmanager
    def guard(
        self, name: str, context: Mapping[str, Any] | None = None, default: bool = False
    ) -> Iterator[bool]:
        """Evaluate ``name`` and record the block's outcome: an error when it raises (the
        exception goes on), ok otherwise::

            with client.guard("checkout-v2", {"userId": user}) as enabled:
                return new_checkout() if enabled else old_checkout()
        """
        enabled = self.is_enabled(name, context, default)
        try:
            yield enabled
        except Exception:
            self.record_outcome(name, enabled, ok=False)
            raise
        self.record_outcome(name, enabled, ok=True)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop the threads and send the last metrics bucket."""
        if self._stop.is_set():
            return
        self._stop.set()
        conn = self._stream_conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=self._timeout + 1)
        self._send_metrics()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- state

    def _install(self, engine_doc: Mapping[str, Any], revision: int | None, delta: bool) -> bool:
        """Swap in the state ``engine_doc`` (a full or delta document) unless older."""
        with self._swap:
            if revision is not None and revision < self._revision:
                return False
            if delta and revision is not None and revision == self._revision:
                return False
            if delta:
                engine = self._state[0].apply_delta(engine_doc, strict=False)
                self._raw.apply(engine_doc.get("events"))
            else:
                engine = FlagEngine.from_unleash(engine_doc, **self._engine_options)
                self._raw.load(engine_doc)
            self._state = (engine, self._raw.reading_defaults())
            if revision is not None:
                self._revision = revision
        self.ready.set()
        return True

    # ---------------------------------------------------------------- polling

    def _poll_loop(self) -> None:
        self._register()
        next_metrics = time.monotonic() + self.metrics_interval
        while not self._stop.is_set():
            self._fetch()
            now = time.monotonic()
            if now >= next_metrics:
                self._send_metrics()
                next_metrics = now + self.metrics_interval
            self._stop.wait(min(self.refresh_interval, max(0.0, next_metrics - now)))

    def _request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {**self._headers, **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self._api + path, data=data, headers=all_headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers or {}), b""

    def _fetch(self) -> None:
        headers = {"If-None-Match": self._etag} if self._etag else {}
        try:
            status, response_headers, body = self._request("GET", "/client/features", None, headers)
        except (OSError, http.client.HTTPException) as exc:
            log.debug("flags: fetch failed: %s", exc)
            return
        if status == 304:
            self.ready.set()
            return
        if status != 200:
            log.warning("flags: %s/client/features answered %s", self._api, status)
            return
        try:
            document = json.loads(body)
        except json.JSONDecodeError:
            log.warning("flags: %s/client/features sent invalid JSON", self._api)
            return
        etag = response_headers.get("ETag") or response_headers.get("Etag") or ""
        if self._install(document, revision_of(etag) if etag else None, delta=False):
            self._etag = etag

    def _register(self) -> None:
        body = {
            "appName": self.app_name,
            "instanceId": self.instance_id,
            "sdkVersion": f"nonstop-python:{__version__}",
            "strategies": [
                "default",
                "flexibleRollout",
                "userWithId",
                "remoteAddress",
                "applicationHostname",
            ],
            "started": datetime.now(UTC).isoformat(),
            "interval": int(self.metrics_interval * 1000),
        }
        try:
            self._request("POST", "/client/register", body)
        except (OSError, http.client.HTTPException) as exc:
            log.debug("flags: register failed: %s", exc)

    def _pending(self) -> tuple[dict[str, Any] | None, dict[Any, int]]:
        """The bucket since the last accepted one, and the totals it was taken from."""
        totals: dict[Any, int] = {}
        for kind, counters in (("yes", self._yes), ("no", self._no)):
            for name, counter in counters.copy().items():
                totals[kind, name] = _value(counter)
        for key, counter in self._variant_counts.copy().items():
            totals["variant", key] = _value(counter)
        for okey, counter in self._outcomes.copy().items():
            totals["outcome", okey] = _value(counter)
        toggles: dict[str, dict[str, Any]] = {}
        for (kind, key), total in totals.items():
            delta = total - self._sent.get((kind, key), 0)
            if delta <= 0:
                continue
            name = key[0] if kind in ("variant", "outcome") else key
            entry = toggles.setdefault(name, {"yes": 0, "no": 0, "variants": {}})
            if kind == "variant":
                entry["variants"][key[1]] = delta
            elif kind == "outcome":
                group = entry.setdefault("outcomes", {}).setdefault(key[1], {})
                group[key[2]] = delta
            else:
                entry[kind] = delta
        if not toggles:
            return None, totals
        bucket = {
            "start": datetime.fromtimestamp(self._bucket_start, UTC).isoformat(),
            "stop": datetime.now(UTC).isoformat(),
            "toggles": toggles,
        }
        return bucket, totals

    def _send_metrics(self) -> None:
        bucket, totals = self._pending()
        if bucket is None:
            return
        body = {
            "appName": self.app_name,
            "instanceId": self.instance_id,
            "environment": self.environment,
            "bucket": bucket,
        }
        try:
            status, _, _ = self._request("POST", "/client/metrics", body)
        except (OSError, http.client.HTTPException) as exc:
            status = 0
            log.debug("flags: metrics failed: %s", exc)
        if status in (200, 202):
            self._sent = totals
            self._bucket_start = time.time()

    # ---------------------------------------------------------------- streaming

    def _stream_loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._stream_once()
                delay = 0.5
            except (OSError, http.client.HTTPException, ValueError) as exc:
                log.debug("flags: stream interrupted: %s", exc)
            finally:
                self.streaming.clear()
            self._stop.wait(delay * (1 + random.random() / 2))
            delay = min(delay * 2, 30.0)

    def _stream_once(self) -> None:
        parts = urlsplit(self._api)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        # The agent sends a comment every 15 s: a read that waits longer means a dead peer.
        conn = connection_class(parts.netloc, timeout=max(self._timeout, 40.0))
        self._stream_conn = conn
        try:
            conn.request(
                "GET",
                parts.path + "/client/streaming",
                headers={**self._headers, "Accept": "text/event-stream"},
            )
            if self._stop.is_set():
                return
            response = conn.getresponse()
            if response.status != 200:
                raise ValueError(f"streaming answered {response.status}")
            self.streaming.set()
            self._read_events(response)
        finally:
            self._stream_conn = None
            conn.close()

    def _read_events(self, response: http.client.HTTPResponse) -> None:
        event, data = "", list[str]()
        while not self._stop.is_set():
            raw = response.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if event and data:
                    self._on_event(event, "\n".join(data))
                event, data = "", list[str]()
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))

    def _on_event(self, event: str, data: str) -> None:
        if event not in ("unleash-connected", "unleash-updated"):
            return
        message = json.loads(data)
        events = message.get("events") or []
        ids = [e.get("eventId") for e in events if isinstance(e, dict)]
        revision = max((i for i in ids if isinstance(i, int)), default=None)
        self._install(message, revision, delta=event == "unleash-updated")
