"""Caddy config for a route table: pure, from tables of cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nonstop.drivers.router.admin import table_hash
from nonstop.drivers.router.base import RouteTable, Upstream
from nonstop.drivers.router.caddy_config import (
    STREAMS_KEEP,
    ProxyTuning,
    build_config,
    duration,
    weights,
)
from nonstop.drivers.router.settings import validate_listen
from nonstop.drivers.router.table import NO_UPSTREAM_BODY, validate_table
from nonstop.errors import RouterError

ADMIN = Path("/s/caddy-admin.sock")
EVENTS = Path("/s/events-1.sock")


def up(name: str, weight: int, port: int = 0, release: str = "v1") -> Upstream:
    return Upstream(name, release, f"127.0.0.1:{port or 9000 + ord(name[-1])}", weight)


def config(*upstreams: Upstream, tuning: ProxyTuning | None = None) -> dict[str, Any]:
    return build_config(
        RouteTable(upstreams),
        listen="127.0.0.1:8080",
        admin_socket=ADMIN,
        events_socket=EVENTS,
        tuning=tuning or ProxyTuning(),
    )


def handlers(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    server = cfg["apps"]["http"]["servers"]["nonstop"]
    handle: list[dict[str, Any]] = server["routes"][-1]["handle"]
    return handle


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([90, 10], [9, 1]),  # runs of 9 then 1, not 90 then 10
        ([50, 50], [1, 1]),
        ([100], [1]),
        ([6, 4, 2], [3, 2, 1]),
        ([7, 3], [7, 3]),
        ([1, 99], [1, 99]),
    ],
)
def test_weights_are_divided_by_their_gcd(given: list[int], expected: list[int]) -> None:
    assert weights([up(f"i{i}", w) for i, w in enumerate(given)]) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.05, "50ms"), (30, "30000ms"), (2.5, "2500ms"), (0, "0ms")],
)
def test_duration_is_whole_milliseconds(seconds: float, expected: str) -> None:
    assert duration(seconds) == expected


@pytest.mark.parametrize(
    ("upstreams", "message"),
    [
        (
            [Upstream("web-1", "v1", "127.0.0.1:80", -1)],
            "route table upstreams[0] (web-1): weight must be >= 0, got -1",
        ),
        (
            [up("a", 1), Upstream("web-2", "v1", "localhost", 1)],
            "route table upstreams[1] (web-2): address must be \"host:port\", got 'localhost'",
        ),
        (
            [Upstream("web-3", "v1", "127.0.0.1:70000", 1)],
            'route table upstreams[0] (web-3): address must be "host:port", '
            "got '127.0.0.1:70000'",
        ),
        (
            [Upstream("a", "v1", "127.0.0.1:81", 1), Upstream("b", "v2", "127.0.0.1:81", 1)],
            "route table upstreams[1] (b): address 127.0.0.1:81 is already upstreams[0]",
        ),
        (
            [Upstream("c", "v1", "127.0.0.1:82", 1.5)],  # type: ignore[arg-type]
            "route table upstreams[0] (c): weight must be an integer, got 1.5",
        ),
    ],
)
def test_bad_tables_name_the_upstream(upstreams: list[Upstream], message: str) -> None:
    with pytest.raises(RouterError) as caught:
        validate_table(RouteTable(tuple(upstreams)))
    assert str(caught.value) == message


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", ":8080", "[::1]:443", "0.0.0.0:1"])
def test_good_listen_addresses(listen: str) -> None:
    assert validate_listen(listen) == listen


@pytest.mark.parametrize("listen", ["8080", "localhost", "127.0.0.1:", "127.0.0.1:0", ":99999"])
def test_bad_listen_addresses(listen: str) -> None:
    with pytest.raises(RouterError, match="router listen address must be"):
        validate_listen(listen)


def test_empty_table_answers_503_and_still_logs() -> None:
    *appends, final = handlers(config())
    assert [a["key"] for a in appends] == ["upstream", "upstream_status"]
    assert final == {
        "handler": "static_response",
        "status_code": 503,
        "headers": {"Content-Type": ["text/plain; charset=utf-8"], "Retry-After": ["1"]},
        "body": NO_UPSTREAM_BODY,
    }


def test_weight_zero_upstreams_leave_the_pool() -> None:
    proxy = handlers(config(up("a", 0), up("b", 3), up("c", 1)))[-1]
    assert [u["dial"] for u in proxy["upstreams"]] == ["127.0.0.1:9098", "127.0.0.1:9099"]
    assert proxy["load_balancing"]["selection_policy"] == {
        "policy": "weighted_round_robin",
        "weights": [3, 1],
    }
    assert handlers(config(up("a", 0)))[-1]["handler"] == "static_response"


def test_tuning_reaches_caddy() -> None:
    tuning = ProxyTuning(drain_timeout=12, mark_down_for=1, upstream_timeout=45)
    cfg = config(up("a", 1), up("b", 1), up("c", 1), tuning=tuning)
    proxy = handlers(cfg)[-1]
    assert cfg["apps"]["http"]["grace_period"] == "12000ms"
    # Streams outlive reloads unless a stream grace bounds them (decision 0460).
    assert proxy["stream_close_delay"] == STREAMS_KEEP
    graced = config(up("a", 1), up("b", 1), tuning=ProxyTuning(stream_grace=7))
    assert handlers(graced)[-1]["stream_close_delay"] == "7000ms"
    assert proxy["transport"]["response_header_timeout"] == "45000ms"
    # Retries at once, never waiting: a wait is cut short by the next reload (decision 0331).
    assert proxy["load_balancing"]["retries"] == 3
    assert "try_duration" not in proxy["load_balancing"]
    assert "try_interval" not in proxy["load_balancing"]
    # Without a health path: passive health only (a failed dial or round trip marks it down).
    assert proxy["health_checks"] == {"passive": {"fail_duration": "1000ms", "max_fails": 1}}


def test_a_lone_upstream_is_never_marked_down() -> None:
    """Nowhere else to send its requests: a mark would only turn a blink into 503s."""
    proxy = handlers(config(up("a", 1), up("b", 0), tuning=ProxyTuning(health_path="/h")))[-1]
    assert "health_checks" not in proxy


@pytest.mark.parametrize(("pool", "retries"), [(1, 2), (2, 2), (5, 5)])
def test_there_are_at_least_two_retries_and_one_per_upstream(pool: int, retries: int) -> None:
    upstreams = [up(f"i{i}", 1, port=9100 + i) for i in range(pool)]
    assert handlers(config(*upstreams))[-1]["load_balancing"]["retries"] == retries


def test_panic_route_sends_to_every_upstream_when_health_leaves_none() -> None:
    """Decision 0570: the error Caddy's proxy returns when health checks marked every upstream
    down is caught and the request sent to the same pool, by weight, ignoring health."""
    tuning = ProxyTuning(health_path="/h")
    cfg = config(up("a", 9), up("b", 1), up("c", 0), tuning=tuning)
    proxy = handlers(cfg)[-1]
    routes = cfg["apps"]["http"]["servers"]["nonstop"]["errors"]["routes"]
    assert len(routes) == 1
    expression = routes[0]["match"][0]["expression"]
    assert expression == (
        '{http.error.status_code} == 503 && {http.error.message} == "no upstreams available"'
    )
    *appends, panic = routes[0]["handle"]
    assert appends == handlers(cfg)[:2]  # the request stream names who answered
    assert "health_checks" not in panic
    assert panic == {k: v for k, v in proxy.items() if k != "health_checks"}
    assert panic["upstreams"] == [{"dial": "127.0.0.1:9097"}, {"dial": "127.0.0.1:9098"}]
    assert panic["load_balancing"]["selection_policy"]["weights"] == [9, 1]


@pytest.mark.parametrize("pool", [[], [1], [1, 0]])
def test_no_panic_route_without_health_checks(pool: list[int]) -> None:
    """An empty pool answers its own 503; a lone upstream is never marked down."""
    upstreams = [up(f"i{i}", w, port=9100 + i) for i, w in enumerate(pool)]
    cfg = config(*upstreams, tuning=ProxyTuning(health_path="/h"))
    assert "errors" not in cfg["apps"]["http"]["servers"]["nonstop"]


def test_a_health_path_turns_on_active_checks() -> None:
    tuning = ProxyTuning(health_path="/healthz", health_interval=0.5, health_timeout=1)
    proxy = handlers(config(up("a", 1), up("b", 1), tuning=tuning))[-1]
    assert proxy["health_checks"]["active"] == {
        "uri": "/healthz",
        "interval": "500ms",
        "timeout": "1000ms",
        "fails": 2,
        "passes": 1,
    }


def test_the_table_probe_is_answered_by_caddy_and_not_logged() -> None:
    table = RouteTable((up("a", 2), up("b", 2)))
    cfg = config(*table.upstreams)
    probe = cfg["apps"]["http"]["servers"]["nonstop"]["routes"][0]
    assert probe["match"] == [
        {"path": ["/.well-known/nonstop/router"], "header": {"X-Nonstop-Probe": ["table"]}}
    ]
    assert probe["handle"][0] == {"handler": "vars", "log_skip": True}
    assert probe["handle"][1]["body"] == table_hash(table) + "\n"
    assert probe["terminal"] is True
    # [2, 2] routes as [1, 1] does: the same hash, so the same config (no reload)
    assert table_hash(table) == table_hash(RouteTable((up("a", 1), up("b", 1))))
    assert table_hash(table) != table_hash(RouteTable((up("a", 1), up("b", 2))))


def test_admin_is_a_0600_unix_socket_and_the_access_log_goes_to_ours() -> None:
    cfg = config()
    assert cfg["admin"] == {"listen": "unix//s/caddy-admin.sock|0600", "config": {"persist": False}}
    logs = cfg["logging"]["logs"]
    assert logs["default"] == {"exclude": ["http.log.access.nonstop"]}
    assert logs["nonstop"]["include"] == ["http.log.access.nonstop"]
    assert logs["nonstop"]["writer"] == {
        "output": "net",
        "address": "unix//s/events-1.sock",
        "soft_start": True,
    }
    server = cfg["apps"]["http"]["servers"]["nonstop"]
    assert server["listen"] == ["127.0.0.1:8080"]
    assert server["logs"] == {"default_logger_name": "nonstop"}
    assert server["automatic_https"] == {"disable": True}
