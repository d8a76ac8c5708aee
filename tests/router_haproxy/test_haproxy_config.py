"""The pure parts of the HAProxy driver, from tables: weights, plans, log lines, stats."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nonstop.drivers.router.base import RequestEvent, RouteTable, Upstream
from nonstop.drivers.router.haproxy_config import (
    Files,
    HAProxyTuning,
    ServerState,
    build_config,
    desired_servers,
    haproxy_weights,
    parse_log_line,
    parse_servers_state,
    parse_sessions,
    plan_changes,
    probe_map_text,
)
from nonstop.drivers.router.haproxy_process import last_alert
from nonstop.errors import RouterError
from nonstop_testing import require_binary

A, B, C = "127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([1], [1]),
        ([90, 10], [9, 1]),
        ([50, 50], [1, 1]),
        ([0, 3], [0, 1]),
        ([0, 0], [0, 0]),
        ([], []),
        ([256, 1], [256, 1]),
        ([1000, 1], [256, 1]),  # scaled to HAProxy's 256; the 1 never rounds down to 0
        ([600, 300, 100], [6, 3, 1]),
        ([999, 500, 0], [256, 128, 0]),  # 500 * 256 / 999 = 128.1
    ],
)
def test_weights_fit_haproxy(weights: list[int], expected: list[int]) -> None:
    assert haproxy_weights(weights) == expected


def test_desired_servers_are_named_by_address() -> None:
    routes = RouteTable(
        upstreams=(Upstream("a", "v1", A, 90), Upstream("b", "v2", "localhost:8002", 10))
    )
    assert desired_servers(routes) == {A: (A, 9), "localhost:8002": ("localhost:8002", 1)}


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        (Upstream("a", "v1", "[::1]:80", 1), r"'\[::1\]:80': HAProxy server names allow only"),
        (Upstream("a", "v1", "127.0.0.1", 1), r'upstreams\[0\] \(a\): address must be "host:port"'),
        (Upstream("a", "v1", A, -1), r"upstreams\[0\] \(a\): weight must be >= 0, got -1"),
    ],
)
def test_bad_upstreams_are_refused_by_name(upstream: Upstream, message: str) -> None:
    with pytest.raises(RouterError, match=message):
        desired_servers(RouteTable(upstreams=(upstream,)))


def ready(name: str, weight: int = 1) -> ServerState:
    return ServerState(name, weight, maint=False)


def maint(name: str, weight: int = 1) -> ServerState:
    return ServerState(name, weight, maint=True)


@pytest.mark.parametrize(
    ("desired", "current", "commands", "leaving"),
    [
        pytest.param(
            {B: (B, 1)},
            [ready(A)],
            [
                f"add server nonstop_app/{B} {B} weight 1",
                f"enable server nonstop_app/{B}",
                f"set server nonstop_app/{A} state maint",  # last: never an empty backend
            ],
            [A],
            id="switch A to B",
        ),
        pytest.param(
            {A: (A, 0), B: (B, 1)},
            [ready(A)],
            [
                f"add server nonstop_app/{B} {B} weight 1",
                f"enable server nonstop_app/{B}",
                f"set server nonstop_app/{A} weight 0",  # after B is in rotation, not before
            ],
            [],
            id="blue-green: B in, then A to weight 0",
        ),
        pytest.param(
            {A: (A, 1), B: (B, 9)},
            [ready(A, 9), ready(B, 1)],
            [f"set server nonstop_app/{B} weight 9", f"set server nonstop_app/{A} weight 1"],
            [],
            id="weights go up before others go down",
        ),
        pytest.param({A: (A, 1)}, [ready(A)], [], [], id="unchanged: nothing to do"),
        pytest.param(
            {A: (A, 9), B: (B, 1)},
            [ready(A), ready(B)],
            [f"set server nonstop_app/{A} weight 9"],
            [],
            id="reweight",
        ),
        pytest.param(
            {A: (A, 0), B: (B, 1)},
            [ready(A), ready(B)],
            [f"set server nonstop_app/{A} weight 0"],
            [],
            id="weight 0 keeps the server, out of rotation",
        ),
        pytest.param(
            {A: (A, 2)},
            [maint(A), ready(B)],
            [
                f"set server nonstop_app/{A} weight 2",
                f"set server nonstop_app/{A} state ready",
                f"set server nonstop_app/{B} state maint",
            ],
            [B],
            id="a draining server comes back",
        ),
        pytest.param(
            {},
            [ready(A), maint(C)],
            [f"set server nonstop_app/{A} state maint"],
            [A],
            id="empty table: all leave; one already draining is left alone",
        ),
    ],
)
def test_plan_changes(
    desired: dict[str, tuple[str, int]],
    current: list[ServerState],
    commands: list[str],
    leaving: list[str],
) -> None:
    plan = plan_changes(desired, current)
    assert list(plan.commands) == commands
    assert list(plan.leaving) == leaving


@pytest.mark.parametrize(
    ("line", "event"),
    [
        pytest.param(
            f"nonstop-req 1795675294 086 200 12 -- {A}\n",
            RequestEvent(1795675294.098, A, 200, 12.0),
            id="served",
        ),
        pytest.param(
            f"nonstop-req 1795675294 086 503 0 -- {A}",
            RequestEvent(1795675294.086, A, 503, 0.0),
            id="the application's own 503 is not a proxy error",
        ),
        pytest.param(
            f"nonstop-req 1795675294 000 503 3011 SC {A}",
            RequestEvent(1795675297.011, A, 503, 3011.0, proxy_error=True),
            id="connect refused after retries: the last server tried is named",
        ),
        pytest.param(
            f"nonstop-req 1795675294 000 502 5 SH {A}",
            RequestEvent(1795675294.005, A, 502, 5.0, proxy_error=True),
            id="server closed before its headers",
        ),
        pytest.param(
            f"nonstop-req 1795675294 000 504 30000 sH {A}",
            RequestEvent(1795675324.0, A, 504, 30000.0, proxy_error=True),
            id="server timeout",
        ),
        pytest.param(
            f"nonstop-req 1795675294 000 502 3 PH {A}",
            RequestEvent(1795675294.003, A, 502, 3.0, proxy_error=True),
            id="bad response headers from the server",
        ),
        pytest.param(
            "nonstop-req 1795675294 000 503 0 SC <NOSRV>",
            RequestEvent(1795675294.0, None, 503, 0.0, proxy_error=True),
            id="no upstream in rotation",
        ),
        pytest.param(
            "nonstop-req 1795675294 000 403 0 PR <NOSRV>",
            RequestEvent(1795675294.0, None, 403, 0.0),
            id="refused by the proxy itself, not a 5xx",
        ),
        pytest.param(
            f"nonstop-req 1795675294 000 200 40 SD {A}",
            RequestEvent(1795675294.04, A, 200, 40.0),
            id="server cut the body: its status still counts as its own",
        ),
        pytest.param(
            "nonstop-req 1795675294 000 404 1 -- <NOSRV>",
            RequestEvent(1795675294.001, None, 404, 1.0),
            id="proxy answer below 500 is no error",
        ),
        pytest.param(f"nonstop-req 1795675294 000 -1 7 CH {A}", None, id="client gave up"),
        pytest.param("Proxy nonstop started.", None, id="a notice"),
        pytest.param("nonstop-req x 000 200 1 -- a", None, id="malformed"),
    ],
)
def test_parse_log_line(line: str, event: RequestEvent | None) -> None:
    parsed = parse_log_line(line.encode())
    if event is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert parsed.ts == pytest.approx(event.ts)
        assert (parsed.upstream, parsed.status, parsed.duration_ms, parsed.proxy_error) == (
            event.upstream,
            event.status,
            event.duration_ms,
            event.proxy_error,
        )


SERVERS_STATE = f"""1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight
3 nonstop_app 1 {A} 127.0.0.1 2 0 9 9
3 nonstop_app 2 {B} 127.0.0.1 0 1 1 1
3 nonstop_app 3 {C} 127.0.0.1 2 4 1 1
"""


def test_parse_servers_state() -> None:
    # admin state 1 = forced maintenance; 4 (forced drain) alone is not maintenance
    assert parse_servers_state(SERVERS_STATE) == [
        ServerState(A, 9, maint=False),
        ServerState(B, 1, maint=True),
        ServerState(C, 1, maint=False),
    ]


def test_unexpected_replies_are_router_errors() -> None:
    with pytest.raises(RouterError, match="unexpected 'show servers state' output 'No such"):
        parse_servers_state("No such backend.")
    with pytest.raises(RouterError, match="unexpected 'show stat' output 'Unknown command"):
        parse_sessions("Unknown command")


SHOW_STAT = f"""# pxname,svname,qcur,qmax,scur,smax
nonstop,FRONTEND,,,3,9
nonstop_app,{A},0,0,2,5
nonstop_app,{B},1,1,0,1
nonstop_app,BACKEND,1,1,2,6
nonstop_panic,{A},0,0,4,4
nonstop_panic,BACKEND,0,0,4,4
nonstop_none,BACKEND,0,0,0,0
"""


def test_parse_sessions_counts_current_and_queued_per_server() -> None:
    assert parse_sessions(SHOW_STAT) == {A: 2, B: 1}
    assert parse_sessions(SHOW_STAT, "nonstop_panic") == {A: 4}


def test_the_panic_backend_gets_the_same_plan_without_checks() -> None:
    plan = plan_changes({A: (A, 1)}, [ready(B)], backend="nonstop_panic")
    assert list(plan.commands) == [
        f"add server nonstop_panic/{A} {A} weight 1",
        f"enable server nonstop_panic/{A}",
        f"set server nonstop_panic/{B} state maint",
    ]
    assert list(plan.leaving) == [B]


def test_last_alert_names_the_cause_not_the_exit(tmp_path: Path) -> None:
    log = tmp_path / "haproxy.log"
    log.write_text(
        "[NOTICE]   (6353) : haproxy version is 2.6.12\n"
        "[ALERT]    (6353) : Binding [h.cfg:13] for frontend web: cannot bind socket "
        "(Address already in use) for [127.0.0.1:41837]\n"
        "[ALERT]    (6353) : [haproxy.main()] Some protocols failed to start their listeners! "
        "Exiting.\n"
    )
    assert last_alert(log) == (
        "Binding [h.cfg:13] for frontend web: cannot bind socket (Address already in use) "
        "for [127.0.0.1:41837]"
    )
    assert last_alert(tmp_path / "missing.log") == "(no log)"


def test_the_config_is_valid_for_haproxy(tmp_path: Path) -> None:
    binary = require_binary("haproxy", "/usr/sbin/haproxy")
    files = Files(tmp_path / "admin.sock", tmp_path / "body.txt", tmp_path / "probe.map")
    files.no_upstream_body.write_text("503\n")
    files.probe_map.write_text(probe_map_text("0123456789abcdef"))
    text = build_config(
        {A: (A, 9), B: (B, 0)}, listen="127.0.0.1:8080", files=files, tuning=HAProxyTuning()
    )
    assert f"    server {A} {A} weight 9 check inter 500ms fall 2 rise 1 " in text
    assert "    hard-stop-after 30000ms\n" in text
    assert "    close-spread-time 30000ms\n" in text  # a soft stop spreads its closes
    assert "    log ring@nonstop_events local0 info\n" in text
    # panic mode (decision 0570): the same servers, unchecked, while none of the checked is up
    panic = text[text.index("backend nonstop_panic\n") :]
    assert f"    server {A} {A} weight 9\n    server {B} {B} weight 0\n" in panic
    assert "check" not in panic
    assert (
        "    use_backend nonstop_panic if { nbsrv(nonstop_app) eq 0 } "
        "{ nbsrv(nonstop_panic) gt 0 }\n    default_backend nonstop_app\n"
    ) in text
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    done = subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
