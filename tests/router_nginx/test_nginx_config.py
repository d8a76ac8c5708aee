"""nginx's config for a route table and its request-log datagrams: pure, from tables of cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.drivers.router.admin import PROBE_PATH, table_hash
from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream
from nonstop.drivers.router.nginx_config import (
    NginxFiles,
    NginxTuning,
    build_config,
    listen_directive,
    parse_log_line,
)
from nonstop.drivers.router.nginx_process import last_error_text

A, B = "127.0.0.1:8001", "127.0.0.1:8002"
FILES = NginxFiles(Path("/s/nginx-home"), Path("/s/nginx-events.sock"))


def config(*upstreams: Upstream, tuning: NginxTuning | None = None) -> str:
    routes = RouteTable(tuple(upstreams))
    return build_config(
        routes, listen="127.0.0.1:8080", files=FILES, tuning=tuning or NginxTuning()
    )


def servers(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("server 1")]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([90, 10], [f"server {A} weight=9", f"server {B} weight=1"]),
        ([50, 50], [f"server {A} weight=1", f"server {B} weight=1"]),
        ([1, 0], [f"server {A} weight=1"]),  # weight 0: out of the config, drained by a reload
        ([0, 0], []),
    ],
)
def test_weights_divided_by_their_gcd_and_zero_left_out(
    weights: list[int], expected: list[str]
) -> None:
    text = config(Upstream("a", "v1", A, weights[0]), Upstream("b", "v2", B, weights[1]))
    checked = [line for line in servers(text) if "backup" not in line]
    assert [line.split(" max_fails")[0] for line in checked] == expected


def test_every_server_is_also_a_backup_never_marked_down() -> None:
    """Panic mode (decision 0570): while every server is marked down the backups, the same
    servers by weight, take the requests; a lone server is never marked down by nginx."""
    text = config(Upstream("a", "v1", A, 90), Upstream("b", "v2", B, 10))
    assert servers(text) == [
        f"server {A} weight=9 max_fails=1 fail_timeout=2s;",
        f"server {B} weight=1 max_fails=1 fail_timeout=2s;",
        f"server {A} weight=9 max_fails=0 backup;",
        f"server {B} weight=1 max_fails=0 backup;",
    ]
    assert "backup" not in config(Upstream("a", "v1", A, 1), Upstream("b", "v2", B, 0))


def test_no_upstream_answers_503_itself_and_the_probe_names_the_table() -> None:
    empty = config()
    assert "proxy_pass" not in empty
    assert 'return 503 "503 no upstream: nonstop is not routing' in empty
    assert f'return 200 "{table_hash(RouteTable(()))}"' in empty
    routed = config(Upstream("a", "v1", A, 1))
    assert f"location = {PROBE_PATH}" in routed
    assert f'return 200 "{table_hash(RouteTable((Upstream("a", "v1", A, 1),)))}"' in routed


def test_tuning_lands_in_the_config() -> None:
    tuning = NginxTuning(
        drain_timeout=12, stream_grace=12, upstream_timeout=45, mark_down_for=3, retries=2
    )
    text = config(Upstream("a", "v1", A, 1), tuning=tuning)
    for expected in (
        "worker_shutdown_timeout 12000ms;",
        "proxy_read_timeout 45000ms;",
        "max_fails=1 fail_timeout=3s;",
        "proxy_next_upstream error timeout;",
        "proxy_next_upstream_tries 2;",
        "access_log syslog:server=unix:/s/nginx-events.sock,nohostname,tag=nonstop nonstop;",
        "pid /s/nginx-home/nginx-master.pid;",
    ):
        assert expected in text
    # Without stream_grace old workers keep their websockets until they end (decision 0460).
    assert "worker_shutdown_timeout" not in config(Upstream("a", "v1", A, 1))


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:8080", "127.0.0.1:8080"), (":8080", "8080"), ("0.0.0.0:80", "0.0.0.0:80")],
)
def test_listen_directive(listen: str, expected: str) -> None:
    assert listen_directive(listen) == expected


def line(upstream: str, status: int, header_time: str, duration: str = "0.012") -> str:
    entry = (
        f'{{"ts":1795672057.061,"status":{status},"duration":{duration},'
        f'"upstream":"{upstream}","upstream_status":"","header_time":"{header_time}"}}'
    )
    return f"<190>Dec  2 14:40:00 nonstop: {entry}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            line(A, 200, "0.010"), RequestEvent(1795672057.061, A, 200, 12.0), id="served"
        ),
        pytest.param(
            line(A, 503, "0.001"), RequestEvent(1795672057.061, A, 503, 12.0), id="the app's 503"
        ),
        pytest.param(
            line(f"{A}, {B}", 502, "-, -"),
            RequestEvent(1795672057.061, B, 502, 12.0, proxy_error=True),
            id="both refused: the last one tried is named",
        ),
        pytest.param(
            line(f"{A}, {B}", 200, "-, 0.002"),
            RequestEvent(1795672057.061, B, 200, 12.0),
            id="retried on the other, which answered",
        ),
        pytest.param(
            line(A, 504, "-"),
            RequestEvent(1795672057.061, A, 504, 12.0, proxy_error=True),
            id="upstream timeout",
        ),
        pytest.param(
            line("", 503, ""),
            RequestEvent(1795672057.061, None, 503, 12.0, proxy_error=True),
            id="no upstream routed",
        ),
        pytest.param(
            line("nonstop_app", 502, "-"),
            RequestEvent(1795672057.061, None, 502, 12.0, proxy_error=True),
            id="every server marked down: tried none",
        ),
    ],
)
def test_log_lines_become_events(text: str, expected: RequestEvent) -> None:
    assert parse_log_line(text.encode()) == expected


@pytest.mark.parametrize(
    "text", ["", "<190>Dec  2 14:40:00 other: {}", "<190>x nonstop: not json", "nonstop: [1]"]
)
def test_other_datagrams_are_not_events(text: str) -> None:
    assert parse_log_line(text) is None


def test_the_specific_bind_error_is_quoted_not_the_closing_one() -> None:
    log = (
        "2026/12/02 14:40:00 [emerg] 7#7: bind() to 127.0.0.1:80 failed "
        "(98: Address already in use)\n"
        "2026/12/02 14:40:00 [emerg] 7#7: still could not bind()\n"
    )
    assert last_error_text(log) == "bind() to 127.0.0.1:80 failed (98: Address already in use)"
