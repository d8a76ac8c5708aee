"""The bundled sample app: a small HTTP service whose failures can be dialled in.

Run it with ``python -m nonstop.demo.sampleapp --port 8001``. Standard library only, so it
starts in a few tens of milliseconds; one thread per connection (ThreadingHTTPServer) with
HTTP/1.1 keep-alive and no per-request logging.

Endpoints:

- ``GET /``              ``version=<VERSION> instance=<NONSTOP_INSTANCE>``, header ``X-Release``
- ``GET /health``        200 when ready; 503 while starting, draining or when FAIL_HEALTH is set
- ``GET /metrics``       Prometheus text: ``http_requests_total{status,release}`` and the
                         ``http_request_duration_seconds`` histogram (requests to / and /slow),
                         ``http_requests_in_flight`` (every path but /metrics)
- ``GET /slow?ms=N``     answers after N milliseconds
- ``GET /stream?seconds=S&interval=I``  a long-lived chunked response: one line every I
                         seconds (default 0.5) for S seconds (default 10)
- ``GET /ws``            a WebSocket (demo/websocket.py): a hello naming release and instance,
                         then every text message echoed

Knobs (flag, else environment variable): ``--version``/VERSION, ``--error-rate``/ERROR_RATE
(fraction of ``/`` answered 500; request n fails when floor(n*rate) > floor((n-1)*rate), so
it is exact and repeatable), ``--latency-ms``/LATENCY_MS (added to ``/``),
``--startup-delay``/STARTUP_DELAY (seconds /health answers 503 after start),
``--fail-health``/FAIL_HEALTH, ``--crash-after``/CRASH_AFTER (exit with code 1 that many
seconds after start), ``--crash-after-ready``/CRASH_AFTER_READY (exit with code 1 that many
seconds after the first /health answered 200: a release that passes its readiness check, then
dies, every time it is restarted), ``--no-graceful``/NO_GRACEFUL,
``--ws-reconnect-window``/WS_RECONNECT_WINDOW (seconds, default 1: the spread of the reconnect
hints sent to WebSocket clients at a stop).

On SIGTERM (graceful, the default): /health turns 503, the listening socket closes, every
WebSocket is closed with 1001 and a reconnect hint, requests in flight (streams included)
finish, then the process exits 0. With ``--no-graceful`` SIGTERM
keeps its default action: the process dies at once and in-flight requests are cut off.

On SIGUSR1 (the quiet signal): every WebSocket is closed the same way, and the app goes on
serving HTTP and accepting new WebSockets (a release kept warm for rollback, docs/websockets.md).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from urllib.parse import parse_qs, urlsplit

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the latency histogram: Prometheus client defaults."""


@dataclass(frozen=True, slots=True)
class Settings:
    port: int
    host: str = "127.0.0.1"
    version: str = "v1"
    release: str = "v1"
    instance: str = "local"
    error_rate: float = 0.0
    latency_ms: float = 0.0
    startup_delay: float = 0.0
    fail_health: bool = False
    crash_after: float | None = None
    crash_after_ready: float | None = None
    graceful: bool = True
    ws_reconnect_window: float = 1.0


def should_fail(n: int, rate: float) -> bool:
    """Request number ``n`` (from 1) is answered 500 under ``rate``.

    Exactly ``floor(n * rate)`` of the first ``n`` requests fail, spread evenly:
    rate 0.25 fails requests 4, 8, 12, ...; rate 0.5 fails 2, 4, 6, ...
    """
    return math.floor(n * rate + 1e-9) > math.floor((n - 1) * rate + 1e-9)


@dataclass
class Metrics:
    """Request counters and a latency histogram, rendered in Prometheus text format."""

    release: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[int, int] = field(default_factory=lambda: {200: 0, 500: 0})
    """Both statuses the app answers with are there, at 0, from the first scrape: Prometheus's
    ``increase()`` takes a series' first sample as its start, so a series born at its first
    request would lose every request before the second scrape (a new canary's share of traffic
    would look too small, and its first errors would not count)."""
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    observed: int = 0
    total_seconds: float = 0.0

    def observe(self, status: int, seconds: float) -> None:
        with self.lock:
            self.counts[status] = self.counts.get(status, 0) + 1
            self.observed += 1
            self.total_seconds += seconds
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[index] += 1
                    break

    def render(self) -> str:
        label = _escape(self.release)
        with self.lock:
            counts, buckets = dict(self.counts), list(self.buckets)
            observed, total = self.observed, self.total_seconds
        lines = [
            "# HELP http_requests_total Requests answered, by status.",
            "# TYPE http_requests_total counter",
        ]
        for status in sorted(counts):
            lines.append(
                f'http_requests_total{{status="{status}",release="{label}"}} {counts[status]}'
            )
        lines += [
            "# HELP http_request_duration_seconds Time to answer a request.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(BUCKETS, buckets, strict=True):
            cumulative += count
            lines.append(
                f'http_request_duration_seconds_bucket{{release="{label}",le="{bound}"}} '
                f"{cumulative}"
            )
        lines += [
            f'http_request_duration_seconds_bucket{{release="{label}",le="+Inf"}} {observed}',
            f'http_request_duration_seconds_sum{{release="{label}"}} {total:.6f}',
            f'http_request_duration_seconds_count{{release="{label}"}} {observed}',
        ]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class App:
    """State shared by all request threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.release)
        self.started = time.monotonic()
        self.draining = threading.Event()
        self._lock = threading.Lock()
        self._requests = 0
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._crash_armed = False
        self.websockets = Connections(settings.ws_reconnect_window)

    def next_request(self) -> int:
        with self._lock:
            self._requests += 1
            return self._requests

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def render_metrics(self) -> str:
        with self._lock:
            in_flight = self._in_flight
        label = _escape(self.settings.release)
        return self.metrics.render() + (
            "# HELP http_requests_in_flight Requests being answered (streams included).\n"
            "# TYPE http_requests_in_flight gauge\n"
            f'http_requests_in_flight{{release="{label}"}} {in_flight}\n'
        )

    def wait_idle(self) -> None:
        with self._lock:
            self._idle.wait_for(lambda: self._in_flight == 0)

    def health(self) -> tuple[int, str]:
        if self.draining.is_set():
            return 503, "draining"
        if self.settings.fail_health:
            return 503, "failing (FAIL_HEALTH)"
        if time.monotonic() - self.started < self.settings.startup_delay:
            return 503, "starting"
        if self.settings.crash_after_ready is not None:
            with self._lock:
                armed, self._crash_armed = self._crash_armed, True
            if not armed:  # the first passing probe: ready now, dead soon
                _crash_later(self.settings.crash_after_ready, "CRASH_AFTER_READY")
        return 200, "ok"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nonstop-sampleapp"
    # Headers and body go out in two writes; with Nagle's algorithm on, the body waits for
    # the client's delayed ACK of the headers (40 ms on Linux) and keep-alive clients top
    # out near 25 requests/s per connection.
    disable_nagle_algorithm = True
    app: App  # set on the subclass made by serve()

    def log_message(self, format: str, *args: object) -> None:
        """No per-request logging: it would cost more than the request."""

    def do_GET(self) -> None:
        if self.path == "/metrics":  # not counted as in flight: it reports that number
            self._send(200, self.app.render_metrics(), "text/plain; version=0.0.4")
            return
        self.app.enter()
        try:
            self._route()
        finally:
            self.app.leave()

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/":
            self._timed(self._index)
        elif url.path == "/slow":
            ms = _number(query, "ms", 100.0)
            self._timed(lambda: self._slow(ms))
        elif url.path == "/health":
            status, text = self.app.health()
            self._send(status, text + "\n")
        elif url.path == "/stream":
            self._stream(_number(query, "seconds", 10.0), _number(query, "interval", 0.5))
        elif url.path == "/ws":
            self._websocket()
        else:
            self._send(404, f"no such path: {url.path}\n")

    def _timed(self, answer: Callable[[], tuple[int, str]]) -> None:
        """Count the request before the response goes out, so a client that has read the
        response always finds it in /metrics."""
        began = time.monotonic()
        status, body = answer()
        self.app.metrics.observe(status, time.monotonic() - began)
        self._send(status, body)

    def _index(self) -> tuple[int, str]:
        settings = self.app.settings
        n = self.app.next_request()
        if settings.latency_ms > 0:
            time.sleep(settings.latency_ms / 1000)
        status = 500 if should_fail(n, settings.error_rate) else 200
        return status, f"version={settings.version} instance={settings.instance}\n"

    @staticmethod
    def _slow(ms: float) -> tuple[int, str]:
        time.sleep(max(0.0, ms) / 1000)
        return 200, f"slept {ms:g}ms\n"

    def _stream(self, seconds: float, interval: float) -> None:
        self.send_response(200)
        self._common_headers("text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        ticks = max(1, math.ceil(seconds / max(interval, 0.01)))
        try:
            for tick in range(ticks):
                self._chunk(f"tick {tick + 1}/{ticks}\n".encode())
                time.sleep(interval)
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        if "websocket" not in self.headers.get("Upgrade", "").lower() or not key:
            self._send(400, "a WebSocket handshake is expected here (Upgrade: websocket)\n")
            return
        if self.app.draining.is_set():
            self._send(503, "draining\n")
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(key.strip()))
        self.send_header("X-Release", self.app.settings.release)
        self.send_header("X-Instance", self.app.settings.instance)
        self.end_headers()
        self.close_connection = True
        connection = Connection(self.connection, self.rfile)
        self.app.websockets.add(connection)
        try:
            settings = self.app.settings
            connection.send_text(hello(settings.release, settings.instance))
            connection.serve()
        except OSError:
            pass
        finally:
            self.app.websockets.remove(connection)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send(self, status: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self._common_headers(content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _common_headers(self, content_type: str) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("X-Release", self.app.settings.release)
        self.send_header("X-Instance", self.app.settings.instance)
        if self.app.draining.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True


# -- WebSocket (RFC 6455, server side) -------------------------------------------------------
#
# Just what a long-lived connection through a deploy needs: the opening handshake (section 4.2),
# unfragmented frames out, any frame in (masked, as clients send them), ping -> pong, and the
# closing handshake (section 5.5.1); no extensions or subprotocols. A connection says hello
# first, ``{"type": "hello", "release": ..., "instance": ...}``, and echoes every message. When
# the app stops, each client gets close code 1001 (going away) with the reason
# ``reconnect-after-ms=N``, N drawn at random in [0, window): clients that honour the hint come
# back spread over the window instead of all at once.

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 section 1.3: appended to the client's key to prove the server read the handshake."""
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
GOING_AWAY = 1001
MAX_PAYLOAD = 1 << 20
"""Frames above 1 MiB are refused (close 1009): this is a sample, not a file transfer."""
CLOSE_WAIT = 2.0
"""Seconds a closing connection waits for the client's close frame before dropping it."""


def accept_key(client_key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``client_key`` (RFC 6455's own example):

    >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
    's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    digest = hashlib.sha1((client_key + GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def encode_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final, unmasked frame (servers never mask), with the 7/16/64-bit length forms.

    >>> encode_frame(TEXT, b"hi")
    b'\\x81\\x02hi'
    >>> encode_frame(CLOSE, close_payload(1001, "bye"))[:4]
    b'\\x88\\x05\\x03\\xe9'
    """
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        return head + bytes([size]) + payload
    if size < 1 << 16:
        return head + bytes([126]) + struct.pack("!H", size) + payload
    return head + bytes([127]) + struct.pack("!Q", size) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's body: the code (2 bytes) and a UTF-8 reason cut to fit 125 bytes."""
    return struct.pack("!H", code) + reason.encode()[:123]


def read_frame(stream: BufferedIOBase) -> tuple[int, bytes]:
    """(opcode, unmasked payload) of the next frame; EOFError when the peer closed the TCP
    connection, ValueError for a frame this endpoint refuses (too large)."""
    head = _exact(stream, 2)
    opcode, masked, size = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", _exact(stream, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", _exact(stream, 8))[0]
    if size > MAX_PAYLOAD:
        raise ValueError(f"frame of {size} bytes")
    mask = _exact(stream, 4) if masked else b""
    data = _exact(stream, size)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return opcode, data


def _exact(stream: BufferedIOBase, n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) < n:
        raise EOFError("connection closed")
    return data


class Connection:
    """One open WebSocket: writes from any thread (one at a time), reads on its own thread."""

    def __init__(self, sock: socket.socket, rfile: BufferedIOBase) -> None:
        self.sock = sock
        self.rfile = rfile
        self._write = threading.Lock()
        self.closing = threading.Event()

    def send(self, opcode: int, payload: bytes = b"") -> None:
        with self._write:
            self.sock.sendall(encode_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self.send(TEXT, text.encode())

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake (once); the reader ends when the client answers, or the
        socket is dropped after :data:`CLOSE_WAIT` seconds."""
        if self.closing.is_set():
            return
        self.closing.set()
        try:
            self.send(CLOSE, close_payload(code, reason))
        except OSError:
            return
        timer = threading.Timer(CLOSE_WAIT, self._drop)
        timer.daemon = True
        timer.start()

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def serve(self) -> None:
        """Echo text and binary messages, answer pings, finish the closing handshake."""
        while True:
            try:
                opcode, data = read_frame(self.rfile)
            except ValueError:
                self.close(1009, "message too big")
                continue
            except (EOFError, OSError):
                return
            if opcode == CLOSE:
                if not self.closing.is_set():  # the client closes first: echo its code
                    self.closing.set()
                    code = data[:2] if len(data) >= 2 else b""
                    self._reply(CLOSE, code)
                return
            if opcode == PING:
                self._reply(PONG, data)
            elif opcode in (TEXT, BINARY, CONTINUATION) and not self.closing.is_set():
                self._reply(opcode, data)

    def _reply(self, opcode: int, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.send(opcode, data)


class Connections:
    """Every open WebSocket of the app, so a stop can close them all."""

    def __init__(self, window: float, rng: Callable[[], float] = random.random) -> None:
        self.window = window
        """Seconds over which the reconnect hints of one stop are spread."""
        self._rng = rng
        self._lock = threading.Lock()
        self._open: set[Connection] = set()

    def add(self, connection: Connection) -> None:
        with self._lock:
            self._open.add(connection)

    def remove(self, connection: Connection) -> None:
        with self._lock:
            self._open.discard(connection)

    def count(self) -> int:
        with self._lock:
            return len(self._open)

    def hint(self) -> str:
        """``reconnect-after-ms=N``: when this client should come back, spread over the window."""
        return f"reconnect-after-ms={round(self._rng() * self.window * 1000)}"

    def close_all(self) -> int:
        """Close every connection with 1001 and a reconnect hint; returns how many."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            connection.close(GOING_AWAY, self.hint())
        return len(connections)


def hello(release: str, instance: str) -> str:
    return json.dumps(
        {"type": "hello", "release": release, "instance": instance, "ts": time.time()}
    )


def _number(query: dict[str, list[str]], key: str, default: float) -> float:
    try:
        return float(query[key][0])
    except (KeyError, IndexError, ValueError):
        return default


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


QUIET_SIGNAL = signal.SIGUSR1
"""Close every WebSocket (1001 and a reconnect hint) and go on serving: what nonstop sends a
release kept warm for rollback once its drain deadline passed (``[app] quiet_signal``)."""


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (graceful) and return the exit code."""
    app = App(settings)
    handler = type("BoundHandler", (Handler,), {"app": app})
    try:
        server = Server((settings.host, settings.port), handler)
    except OSError as exc:
        print(
            f"sampleapp: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr
        )
        return 1
    # The main thread waits for the stop signals with sigwait; blocking them first (threads
    # inherit the mask) means no handler ever runs inside a lock some thread holds.
    stops = {signal.SIGTERM, signal.SIGINT} if settings.graceful else {signal.SIGINT}
    waited = stops | {QUIET_SIGNAL}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    if settings.crash_after is not None:
        _crash_later(settings.crash_after)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="accept", daemon=True)
    thread.start()
    print(
        f"sampleapp {settings.version} ({settings.instance}) listening on "
        f"{settings.host}:{settings.port}",
        file=sys.stderr,
        flush=True,
    )
    while signal.sigwait(waited) == QUIET_SIGNAL:
        closed = app.websockets.close_all()
        print(f"sampleapp: quiet, closed {closed} websockets", file=sys.stderr, flush=True)
    app.draining.set()
    server.shutdown()
    server.server_close()
    app.websockets.close_all()
    app.wait_idle()
    print("sampleapp: drained, exiting", file=sys.stderr, flush=True)
    return 0


def _crash_later(seconds: float, knob: str = "CRASH_AFTER") -> None:
    def crash() -> None:
        print(f"sampleapp: crashing as asked ({knob}={seconds:g})", file=sys.stderr, flush=True)
        os._exit(1)

    timer = threading.Timer(seconds, crash)
    timer.daemon = True
    timer.start()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m nonstop.demo.sampleapp", description=__doc__)
    parser.add_argument("--port", type=int, default=env.get("PORT") or None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--version", default=env.get("VERSION", "v1"))
    parser.add_argument("--error-rate", type=float, default=env.get("ERROR_RATE", "0"))
    parser.add_argument("--latency-ms", type=float, default=env.get("LATENCY_MS", "0"))
    parser.add_argument("--startup-delay", type=float, default=env.get("STARTUP_DELAY", "0"))
    parser.add_argument("--fail-health", action="store_true", default=_env_flag("FAIL_HEALTH"))
    parser.add_argument("--crash-after", type=float, default=env.get("CRASH_AFTER") or None)
    parser.add_argument(
        "--crash-after-ready", type=float, default=env.get("CRASH_AFTER_READY") or None
    )
    parser.add_argument(
        "--no-graceful", dest="graceful", action="store_false", default=not _env_flag("NO_GRACEFUL")
    )
    parser.add_argument(
        "--ws-reconnect-window", type=float, default=env.get("WS_RECONNECT_WINDOW", "1")
    )
    args = parser.parse_args(argv)
    if args.port is None:
        parser.error("--port (or PORT) is required")
    if not 0.0 <= args.error_rate <= 1.0:
        parser.error(f"--error-rate/ERROR_RATE must be between 0 and 1, got {args.error_rate}")
    return Settings(
        port=args.port,
        host=args.host,
        version=args.version,
        release=env.get("NONSTOP_RELEASE", args.version),
        instance=env.get("NONSTOP_INSTANCE", "local"),
        error_rate=args.error_rate,
        latency_ms=args.latency_ms,
        startup_delay=args.startup_delay,
        fail_health=args.fail_health,
        crash_after=args.crash_after,
        crash_after_ready=args.crash_after_ready,
        graceful=args.graceful,
        ws_reconnect_window=max(0.0, args.ws_reconnect_window),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
