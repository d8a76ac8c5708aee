"""nginx's config for a route table, and its request-log lines: pure, tested from tables.

One ``upstream`` of the table's servers with weight > 0, each also listed as a backup that is
never marked down (panic mode: used only while every server is marked down; nginx's smooth
weighted round robin:
[9, 1] interleaves, every run of 10 requests is 9 and 1; one worker process, because each worker
keeps its own position in that cycle: with several, a 1% canary could get none of a worker's
requests), passive health (``max_fails=1``:
a connection error or timeout takes a server out for ``fail_timeout``) and retries on refused
connections (``proxy_next_upstream error timeout``); the table probe (admin.py) answered by
nginx itself and never logged; every other request logged as one JSON object through syslog to
the agent's unix datagram socket (no file on the hot path). A server that leaves the table, or
goes to weight 0, is not in the new config: a graceful reload (SIGHUP) starts new workers with
it, and the old workers finish their requests and streams. Upgrade requests (WebSockets) go
through a named location of their own whose ``proxy_read_timeout`` is ``stream_idle_timeout``
rather than ``upstream_timeout``, so a silent WebSocket is not closed after 30 s. Old workers
have no ``worker_shutdown_timeout`` unless ``stream_grace`` is set: that timeout closes every
connection an old worker holds, websockets to instances that stay in the table too, so without
it an old worker lives until its last connection ends (a draining instance's end when the engine
stops it; decision 0460).

A request-log line, as the syslog datagram carries it::

    <190>Dec  2 14:40:00 nonstop: {"ts":1795672057.061,"status":200,"duration":0.002,
      "upstream":"127.0.0.1:18081","upstream_status":"200","header_time":"0.002"}

``upstream`` lists every server tried (``a:1, b:2``): the last one is charged. No header time
from the last server means nginx made the answer itself: for a 5xx, a proxy error. An upstream
that is not ``host:port`` (the empty table's own 503, or the group name when every server was
marked down) is None.
"""

from __future__ import annotations

import json
import math
import os
import pwd
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from nonstop.drivers.router.admin import PROBE_HEADER, PROBE_PATH, PROBE_VALUE, table_hash
from nonstop.drivers.router.base import RequestEvent, RouteTable
from nonstop.drivers.router.settings import ProxyTimings
from nonstop.drivers.router.table import NO_UPSTREAM_BODY

UPSTREAM = "nonstop_app"
TAG = "nonstop"


@dataclass(frozen=True, slots=True, kw_only=True)
class NginxTuning(ProxyTimings):
    """``mark_down_for``: how long a server that failed a connection stays out (fail_timeout).
    ``connect_timeout``: how long nginx waits for a connection before trying the next server.
    ``old_workers``: how many workers of older configs may linger, each holding the long-lived
    connections it had at its reload; after a reload, those beyond that many holding the
    fewest connections are stopped and those closed (decision 0425)."""

    mark_down_for: float = 2.0
    connect_timeout: float = 1.0
    retries: int = 3
    old_workers: int = 16


@dataclass(frozen=True, slots=True)
class NginxFiles:
    prefix: Path
    """nginx's own files: its pid file, temp directories."""
    events_socket: Path
    """The agent's unix datagram socket the request log goes to."""


def _shutdown_timeout(tuning: NginxTuning) -> str:
    if tuning.stream_grace is None:
        return ""
    return f"worker_shutdown_timeout {_seconds(tuning.stream_grace)};\n"


def _seconds(value: float) -> str:
    return f"{max(1, round(value * 1000))}ms"


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("$", "${dollar}")
    )


def listen_directive(listen: str) -> str:
    """``host:port`` as nginx reads it (``:8080`` -> ``8080``: every address)."""
    host, _, port = listen.rpartition(":")
    return port if host in ("", "*") else listen


LOG_FORMAT = (
    '{"ts":$msec,"status":$status,"duration":$request_time,"upstream":"$upstream_addr",'
    '"upstream_status":"$upstream_status","header_time":"$upstream_header_time"}'
)


def build_config(table: RouteTable, *, listen: str, files: NginxFiles, tuning: NginxTuning) -> str:
    """The whole nginx.conf for ``table``; a reload with it is one atomic switch."""
    pool = [u for u in table.upstreams if u.weight > 0]
    divisor = reduce(math.gcd, (u.weight for u in pool), 0) or 1
    servers = "".join(
        f"        server {u.address} weight={u.weight // divisor} max_fails=1 "
        f"fail_timeout={max(1, math.ceil(tuning.mark_down_for))}s;\n"
        for u in pool
    )
    if len(pool) > 1:
        # Panic mode (decision 0570): while every server is marked down, nginx uses its backup
        # servers; these are the same ones, never marked down (max_fails=0), so requests go to
        # all of them by weight instead of a 502 "no live upstreams" for every user. A lone
        # server needs none: nginx never marks the only server of an upstream down.
        servers += "".join(
            f"        server {u.address} weight={u.weight // divisor} max_fails=0 backup;\n"
            for u in pool
        )
    upstream = f"    upstream {UPSTREAM} {{\n{servers}    }}\n" if pool else ""
    no_upstream = f'return 503 "{_escape(NO_UPSTREAM_BODY)}"'
    route = (
        f"            proxy_pass http://{UPSTREAM};\n"
        if pool
        else f"            add_header Retry-After 1 always;\n            {no_upstream};\n"
    )
    header = "$http_" + PROBE_HEADER.lower().replace("-", "_")
    user = (
        f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    )  # as root, workers would otherwise run as nobody and could not reach the agent's socket
    temp = files.prefix / "temp"
    log = f"syslog:server=unix:{files.events_socket},nohostname,tag={TAG}"
    return f"""\
# Written by nonstop on every apply; a change is a graceful reload (SIGHUP).
{user}daemon off;
master_process on;
worker_processes 1;
pid {files.prefix / "nginx-master.pid"};
error_log stderr notice;
{_shutdown_timeout(tuning)}
events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type text/plain;
    log_format nonstop escape=json '{LOG_FORMAT}';

    map $http_upgrade $nonstop_connection {{
        default upgrade;
        "" close;
    }}

{upstream}
    server {{
        listen {listen_directive(listen)};
        # nonstop table {table_hash(table)}

        location = {PROBE_PATH} {{
            if ({header} = "{PROBE_VALUE}") {{
                access_log off;
                return 200 "{table_hash(table)}";
            }}
            access_log {log} nonstop;
{route}        }}

        location / {{
            error_page 418 = @nonstop_stream;
            if ($http_upgrade) {{
                return 418;
            }}
{_proxied(log, tuning, tuning.upstream_timeout)}{route}        }}

        location @nonstop_stream {{
{_proxied(log, tuning, tuning.stream_idle_timeout)}{route}        }}
    }}
}}
"""


def _proxied(log: str, tuning: NginxTuning, idle: float) -> str:
    """A proxying location's directives. ``idle`` is ``proxy_read_timeout``, which bounds a
    response that sends nothing and, once a connection is upgraded, a WebSocket that carries
    nothing: requests get ``upstream_timeout``, upgrade requests (routed to
    ``@nonstop_stream`` by ``location /``, since the directive takes no variable)
    ``stream_idle_timeout``."""
    return f"""\
            access_log {log} nonstop;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $nonstop_connection;
            proxy_connect_timeout {_seconds(tuning.connect_timeout)};
            proxy_read_timeout {_seconds(idle)};
            proxy_send_timeout {_seconds(max(idle, 60.0))};
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries {tuning.retries};
            proxy_buffering off;
"""


def _last(value: object) -> str:
    """The last of nginx's comma- (servers tried) or colon- (internal redirect) separated list."""
    text = str(value or "").replace(" : ", ", ")
    return text.rsplit(", ", 1)[-1].strip()


def parse_log_line(datagram: bytes | str) -> RequestEvent | None:
    """One syslog datagram -> RequestEvent; None for anything that is not a request line."""
    text = datagram.decode("utf-8", "replace") if isinstance(datagram, bytes) else datagram
    _, sep, body = text.partition(f"{TAG}: ")
    if not sep:
        return None
    try:
        entry = json.loads(body)
        status = int(entry["status"])
        ts = float(entry["ts"])
        duration_ms = float(entry.get("duration") or 0.0) * 1000.0
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(entry, dict):
        return None
    address = _last(entry.get("upstream"))
    host, sep, port = address.rpartition(":")
    upstream = address if sep and host and port.isdigit() else None
    answered = upstream is not None and _last(entry.get("header_time")) not in ("", "-")
    return RequestEvent.seen(ts, upstream, status, duration_ms, answered=answered)
