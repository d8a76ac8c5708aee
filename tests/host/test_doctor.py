"""`nonstop doctor`'s checks from tables of injected facts: each case names the facts that
differ from a healthy host and the finding expected."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from nonstop.host.doctor import GIB, Facts, Finding, Listener, diagnose, version_tuple

HEALTHY = Facts(
    python=(3, 11, 7),
    router_kind="caddy",
    router_binary="/venv/bin/caddy",
    router_version="v2.11.7",
    listeners=(Listener("router.listen", "127.0.0.1:8080", "free"),),
    migrate_req=1,
    open_files=(65536, 65536),
    open_files_of="an agent started from this shell",
    state_dir="/srv/shop/.nonstop",
    state_owner=1000,
    uid=1000,
    free_bytes=50 * GIB,
)

CASES: list[tuple[str, dict[str, Any], Finding]] = [
    (
        "old python",
        {"python": (3, 10, 12)},
        Finding(
            "python",
            "problem",
            "Python 3.10.12 is older than 3.11, which nonstop needs",
            "install Python 3.11 or newer and reinstall nonstop with it (pip install nonstop)",
        ),
    ),
    (
        "bad config",
        {"config_error": "nonstop.toml: app.name: field required"},
        Finding(
            "config",
            "problem",
            "nonstop.toml: app.name: field required",
            "fix nonstop.toml (`nonstop init` writes a commented example)",
        ),
    ),
    (
        "no config",
        {"config_found": False, "config_error": "/srv/nonstop.toml not found; run `nonstop init`"},
        Finding(
            "config",
            "problem",
            "/srv/nonstop.toml not found; run `nonstop init`; the other checks use the defaults "
            "(Caddy on 127.0.0.1:8080)",
            "run nonstop doctor in the project's directory (or set NONSTOP_PROJECT)",
        ),
    ),
    (
        "no haproxy",
        {
            "router_kind": "haproxy",
            "router_binary": None,
            "router_version": None,
            "router_error": "haproxy binary not found (looked for haproxy, /usr/sbin/haproxy)",
        },
        Finding(
            "router",
            "problem",
            "haproxy binary not found (looked for haproxy, /usr/sbin/haproxy)",
            "apt-get install haproxy",
        ),
    ),
    (
        "old haproxy",
        {
            "router_kind": "haproxy",
            "router_binary": "/usr/sbin/haproxy",
            "router_version": "2.4.22-1",
        },
        Finding(
            "router",
            "problem",
            "haproxy 2.4.22-1 at /usr/sbin/haproxy is older than 2.6.0, "
            "the oldest nonstop supports",
            "upgrade haproxy to 2.6.0 or newer (apt-get install haproxy)",
        ),
    ),
    (
        "nginx new enough",
        {"router_kind": "nginx", "router_binary": "/usr/sbin/nginx", "router_version": "1.22.1"},
        Finding("router", "ok", "nginx 1.22.1 at /usr/sbin/nginx"),
    ),
    (
        "port taken",
        {"listeners": (Listener("router.listen", "0.0.0.0:80", "taken", "pid 812 (nginx)"),)},
        Finding(
            "port router.listen",
            "problem",
            "0.0.0.0:80 is already in use by pid 812 (nginx)",
            "stop what holds it, or set router.listen to a free address",
        ),
    ),
    (
        "port ours",
        {"listeners": (Listener("router.listen", "127.0.0.1:8080", "ours"),)},
        Finding("port router.listen", "ok", "127.0.0.1:8080 is held by this project's agent"),
    ),
    (
        "migrate_req off with caddy",
        {"migrate_req": 0},
        Finding(
            "tcp_migrate_req",
            "problem",
            "net.ipv4.tcp_migrate_req is 0: connections waiting in the old listening socket "
            "when Caddy reloads are reset (docs/router.md)",
            "sysctl -w net.ipv4.tcp_migrate_req=1 && echo net.ipv4.tcp_migrate_req=1 > "
            "/etc/sysctl.d/90-nonstop.conf (as root)",
        ),
    ),
    (
        "migrate_req off with haproxy (no reloads)",
        {"migrate_req": 0, "router_kind": "haproxy", "router_version": "2.6.12"},
        Finding("tcp_migrate_req", "ok", "net.ipv4.tcp_migrate_req = 0"),
    ),
    (
        "old kernel",
        {"migrate_req": None},
        Finding(
            "tcp_migrate_req",
            "warning",
            "this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14+): a Caddy reload may "
            "reset connections that were waiting to be accepted",
            'run a 5.14+ kernel, or use [router] kind = "haproxy" (no reloads)',
        ),
    ),
    (
        "low open files",
        {"open_files": (1024, 524288)},
        Finding(
            "open files",
            "problem",
            "an agent started from this shell may open 1024 files (at least 4096 wanted): the "
            "router, which inherits the limit, spends two per proxied connection",
            "the unit `nonstop service install` writes sets LimitNOFILE=65536; by hand: "
            "`ulimit -n 65536` before `nonstop up`",
        ),
    ),
    (
        "low hard limit",
        {"open_files": (1024, 1024), "open_files_of": "the running agent (pid 9)"},
        Finding(
            "open files",
            "problem",
            "the running agent (pid 9) may open 1024 files (at least 4096 wanted): the router, "
            "which inherits the limit, spends two per proxied connection",
            "the unit `nonstop service install` writes sets LimitNOFILE=65536; by hand: "
            "`ulimit -n 4096` before `nonstop up` (the hard limit is low too: raise nofile in "
            "/etc/security/limits.conf)",
        ),
    ),
    (
        "state dir not writable",
        {"state_writable": False, "state_exists": False},
        Finding(
            "state dir",
            "problem",
            "/srv/shop/.nonstop (its parent, as it does not exist yet) is not writable by uid 1000",
            "run nonstop as the owner of the project, or `chown -R $(id -u) /srv/shop/.nonstop`",
        ),
    ),
    (
        "state dir of another user",
        {"state_owner": 0},
        Finding(
            "state dir",
            "warning",
            "/srv/shop/.nonstop belongs to uid 0, not to uid 1000 running this",
            "run nonstop as the same user every time (the agent's token and socket are 0600)",
        ),
    ),
    (
        "state dir world-writable",
        {"state_mode": 0o777},
        Finding(
            "state dir",
            "problem",
            "/srv/shop/.nonstop is writable by everyone (mode 777)",
            "chmod o-w /srv/shop/.nonstop",
        ),
    ),
    (
        "disk nearly full",
        {"free_bytes": GIB // 2},
        Finding(
            "disk",
            "problem",
            "only 0.5 GiB free for /srv/shop/.nonstop: releases and logs need at least 1 GiB",
            "free space there (`nonstop prune` removes old releases and logs) or move the project",
        ),
    ),
    (
        "disk low",
        {"free_bytes": 3 * GIB},
        Finding(
            "disk",
            "warning",
            "3.0 GiB free for /srv/shop/.nonstop: a release copy or a log burst may fill it",
            "free space there (`nonstop prune` removes old releases and logs) or move the project",
        ),
    ),
]


@pytest.mark.parametrize(("name", "changes", "expected"), CASES, ids=[c[0] for c in CASES])
def test_check(name: str, changes: dict[str, Any], expected: Finding) -> None:
    findings = diagnose(replace(HEALTHY, **changes))
    assert expected in findings, [f for f in findings if f.check == expected.check]
    # Nothing else is reported as wrong: each case changes one fact.
    others = [f for f in findings if f.status != "ok" and f != expected]
    assert others == []


def test_a_healthy_host_has_no_problem() -> None:
    findings = diagnose(HEALTHY)
    assert [f.check for f in findings] == [
        "python",
        "config",
        "router",
        "port router.listen",
        "tcp_migrate_req",
        "open files",
        "state dir",
        "disk",
    ]
    assert {f.status for f in findings} == {"ok"}


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("v2.11.7", (2, 11, 7)),
        ("2.6.12-1+deb12u4", (2, 6, 12)),
        ("1.22", (1, 22, 0)),
        ("v2", (2, 0, 0)),
    ],
)
def test_version_tuple(text: str, version: tuple[int, ...]) -> None:
    assert version_tuple(text) == version
