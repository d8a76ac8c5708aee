"""The [fleet] table: what a good one gives, and the exact line each bad one gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.config import parse_config
from nonstop.config.fleet import switches_at_edge
from nonstop.errors import ConfigError, UsageError
from nonstop.fleet.edge import Edge
from nonstop.fleet.hostfile import host_toml, to_toml
from nonstop.fleet.status import role_summary

APP = '[app]\nname = "shop"\ncommand = "python3 app.py --port {port}"\n'
TWO = (
    '[[fleet.hosts]]\nname = "web1"\naddress = "10.0.0.11"\n'
    '[[fleet.hosts]]\nname = "web2"\naddress = "web2.internal"\n'
)

ERRORS = [
    (
        TWO + '[[fleet.hosts]]\nname = "jobs"\naddress = "10.0.0.13"\nroles = ["worker"]\n',
        'fleet.hosts[2].roles: a "worker" host needs "web" too in this version',
    ),
    (
        TWO + '[fleet.front]\nkind = "external"\n',
        'fleet.front.kind: "external" needs router.kind = "haproxy" on the hosts (their router '
        'answers the load balancer\'s health path itself), got "caddy"',
    ),
    (
        TWO + '[fleet.front]\nswitch = "edge"\n',
        'fleet.front.switch: "edge" needs router.kind = "haproxy" on the hosts (their router '
        'sends each request to the release the edge pins), got "caddy": set kind = "haproxy", '
        'or switch = "hosts"',
    ),
    (
        '[router]\nkind = "haproxy"\n'
        + TWO
        + '[fleet.front]\nkind = "external"\nswitch = "edge"\n',
        'fleet.front.switch: "edge" needs kind = "edge" (an external load balancer cannot '
        'pin a release for every host): set switch = "hosts" or leave it unset',
    ),
    (
        TWO + '[fleet.front]\nswitch = "both"\n',
        "fleet.front.switch: expected one of edge, hosts",
    ),
    (
        '[router]\nfront_health = "/lb"\n',
        'router.front_health: answered by the haproxy router only (kind is "caddy"): set '
        'kind = "haproxy"',
    ),
    (
        '[router]\nkind = "haproxy"\nfront_health = "lb"\n',
        'router.front_health: expected a path starting with "/", got "lb"',
    ),
    (
        "[fleet]\nhosts = []\n",
        "fleet.hosts: needs at least one host",
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "web3"\naddress = "10.0.0"\n',
        'fleet.hosts[2].address: expected an IP address or a DNS name such as "10.0.0.11" or '
        '"web1.internal", got "10.0.0"',
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "web3"\naddress = "bad_name!"\n',
        "fleet.hosts[2].address: expected an IP address or a DNS name",
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "web1"\naddress = "10.0.0.13"\n',
        'fleet.hosts[2].name: "web1" is already hosts[0]',
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "web3"\naddress = "10.0.0.11"\n',
        "fleet.hosts[2].address: 10.0.0.11:22 with path /var/lib/nonstop is already hosts[0]",
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "Web 3"\naddress = "10.0.0.13"\n',
        "fleet.hosts[2].name: expected letters, digits",
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "web3"\naddress = "10.0.0.13"\nport = 0\n',
        "fleet.hosts[2].port: expected a value >= 1, got 0",
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "web3"\naddress = "10.0.0.13"\nroles = ["db"]\n',
        'fleet.hosts[2].roles[0]: expected one of web, worker, edge, got "db"',
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "web3"\naddress = "10.0.0.13"\npath = "srv"\n',
        'fleet.hosts[2].path: expected an absolute path such as "/var/lib/nonstop", got "srv"',
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "web3"\nadress = "10.0.0.13"\n',
        'fleet.hosts[2].adress: unknown key (did you mean "address"?)',
    ),
    (
        TWO + '[[fleet.hosts]]\nname = "web3"\naddress = "10.0.0.13"\nlabels = { zone = 1 }\n',
        "fleet.hosts[2].labels.zone: expected a string, got 1",
    ),
    (
        '[[fleet.hosts]]\nname = "w"\naddress = "10.0.0.1"\nroles = ["edge"]\n',
        'fleet.hosts: no host has the "web" role',
    ),
    (
        TWO + '[fleet.front]\nkind = "f5"\n',
        'fleet.front.kind: expected one of edge, external, got "f5"',
    ),
    (
        TWO + '[fleet.front]\non = "web1"\n',
        'fleet.front.on: host "web1" needs the "edge" role to run the edge router',
    ),
    (
        TWO + '[fleet.front]\non = "lb9"\n',
        'fleet.front.on: expected "controller" or a host name, got "lb9"',
    ),
    (
        TWO + '[fleet.front]\nlisten = "80"\n',
        'fleet.front.listen: expected "host:port" such as "10.0.0.1:80", got "80"',
    ),
    (
        TWO + '[fleet.front]\nkind = "external"\nhealth_path = "up"\n',
        'fleet.front.health_path: expected a path starting with "/", got "up"',
    ),
    (
        TWO + '[fleet]\ncanary = ["web9"]\n',
        'fleet.canary[0]: "web9" is not a host with the "web" role',
    ),
    (
        TWO + '[fleet]\ncanary = ["web1", "web2"]\n',
        "fleet.canary: every web host is a canary host; leave at least one for the rest",
    ),
    (
        TWO + "[fleet]\nmax_unavailable = 0\n",
        "fleet.max_unavailable: expected a value >= 1, got 0",
    ),
    (
        TWO + '[fleet]\non_host_lost = "panic"\n',
        'fleet.on_host_lost: expected one of pause, continue, got "panic"',
    ),
    (
        TWO + '[fleet]\nbatch_wait = "soon"\n',
        "fleet.batch_wait: expected a duration",
    ),
]


@pytest.mark.parametrize(("toml", "expected"), ERRORS)
def test_bad_fleet_tables_name_the_path(toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(APP + toml)
    assert f"nonstop.toml: {expected}" in str(info.value)


def test_a_good_fleet_table_and_its_defaults() -> None:
    config = parse_config(
        APP
        + TWO
        + '[[fleet.hosts]]\nname = "lb"\naddress = "10.0.0.2"\nuser = "deploy"\nport = 2222\n'
        + 'key = "~/.ssh/deploy"\nroles = ["edge"]\nlabels = { zone = "b" }\n'
        + '[fleet]\nmax_unavailable = 2\nbatch_wait = "5s"\n'
        + '[fleet.front]\non = "lb"\nlisten = "10.0.0.2:80"\n'
    )
    fleet = config.fleet
    assert fleet is not None
    assert [h.name for h in fleet.web_hosts] == ["web1", "web2"]
    assert fleet.canary_hosts == ["web1"]
    assert (fleet.max_unavailable, fleet.batch_wait, fleet.on_host_lost) == (2, 5.0, "pause")
    lb = fleet.host("lb")
    assert (lb.user, lb.port, lb.key, lb.labels, lb.serves) == (
        "deploy",
        2222,
        "~/.ssh/deploy",
        {"zone": "b"},
        False,
    )
    web1 = fleet.host("web1")
    assert (web1.user, web1.port, web1.path, web1.roles) == (
        "root",
        22,
        "/var/lib/nonstop",
        ["web"],
    )
    assert (fleet.front.kind, fleet.front.on, fleet.known_hosts) == (
        "edge",
        "lb",
        ".nonstop/fleet/known_hosts",
    )


def test_a_file_without_fleet_has_none() -> None:
    assert parse_config(APP).fleet is None


def test_the_host_file_is_the_controllers_without_fleet_and_listens_on_the_host() -> None:
    config = parse_config(
        APP
        + 'env = { GREETING = "a \\"quoted\\" line\\n", "X" = "1" }\n'
        + '[strategy]\nkind = "canary"\n[strategy.canary]\n'
        + 'steps = [{ weight = 10, pause = "5s" }, { pause = {} }]\n'
        + TWO
        + "[fleet]\nrouter_port = 9000\n"
    )
    assert config.fleet is not None
    text = host_toml(config, config.fleet.host("web2"), config.fleet)
    again = parse_config(text)
    assert again.fleet is None
    assert again.router.listen == "web2.internal:9000"
    assert again.app == config.app
    assert again.strategy == config.strategy
    assert to_toml(
        {"a b": {"c": [1, 2.5, True]}, "d": {}}
    ) == '\n["a b"]\nc = [1, 2.5, true]\n\n[d]\n'.lstrip("\n")


def test_an_external_front_makes_each_host_router_answer_its_health_path() -> None:
    config = parse_config(
        APP
        + '[router]\nkind = "haproxy"\n'
        + TWO
        + '[fleet.front]\nkind = "external"\nhealth_path = "/lb-check"\ndrain_wait = "6s"\n'
    )
    assert config.fleet is not None
    assert config.fleet.front.drain_wait == 6.0
    again = parse_config(host_toml(config, config.fleet.host("web1"), config.fleet))
    assert (again.router.kind, again.router.front_health) == ("haproxy", "/lb-check")
    edge = parse_config(APP + TWO)
    assert edge.fleet is not None
    plain = parse_config(host_toml(edge, edge.fleet.host("web1"), edge.fleet))
    assert plain.router.front_health is None


@pytest.mark.parametrize(
    ("router", "front", "pinned"),
    [
        ('[router]\nkind = "haproxy"\n', "", True),  # the default where it can be
        ('[router]\nkind = "haproxy"\n', '[fleet.front]\nswitch = "hosts"\n', False),
        ("", "", False),  # Caddy on the hosts cannot honour a pin: each host switches
        ('[router]\nkind = "haproxy"\n', '[fleet.front]\nkind = "external"\n', False),
    ],
)
def test_the_edge_switch_makes_each_host_router_honour_the_pin(
    router: str, front: str, pinned: bool
) -> None:
    config = parse_config(APP + router + TWO + front)
    assert config.fleet is not None
    assert switches_at_edge(config.fleet, config.router.kind) is pinned
    host = parse_config(host_toml(config, config.fleet.host("web1"), config.fleet))
    assert host.router.release_slots is pinned
    if pinned:  # the edge checks each host with the pinned release on that path
        assert host.router.front_health == "/health"


def test_an_edge_on_a_fleet_host_is_refused_naming_the_supported_layouts(tmp_path: Path) -> None:
    config = parse_config(
        APP
        + TWO
        + '[[fleet.hosts]]\nname = "lb"\naddress = "10.0.0.2"\nroles = ["edge"]\n'
        + '[fleet.front]\non = "lb"\nlisten = "10.0.0.2:80"\n'
    )
    assert config.fleet is not None
    with pytest.raises(UsageError) as info:
        Edge(tmp_path, config.fleet, 1.0)
    message = str(info.value)
    assert message.startswith("fleet.front.on: the edge router runs on the controller machine only")
    assert 'kind = "edge", on = "controller"' in message
    assert 'kind = "external"' in message


def test_workers_run_on_the_hosts_with_the_worker_role_or_everywhere_when_none_has_it() -> None:
    workers = '[processes.mailer]\ncommand = "python3 mailer.py"\nreplicas = 2\n'
    placed = parse_config(
        APP
        + workers
        + '[[fleet.hosts]]\nname = "web1"\naddress = "10.0.0.11"\nroles = ["web", "worker"]\n'
        + '[[fleet.hosts]]\nname = "web2"\naddress = "10.0.0.12"\n'
    )
    assert placed.fleet is not None
    one = parse_config(host_toml(placed, placed.fleet.host("web1"), placed.fleet))
    two = parse_config(host_toml(placed, placed.fleet.host("web2"), placed.fleet))
    assert (one.processes["mailer"].replicas, two.processes["mailer"].replicas) == (2, 0)
    assert two.processes["mailer"].command == "python3 mailer.py"
    everywhere = parse_config(APP + workers + TWO)
    assert everywhere.fleet is not None
    again = parse_config(host_toml(everywhere, everywhere.fleet.host("web2"), everywhere.fleet))
    assert again.processes["mailer"].replicas == 2


def test_fleet_status_shows_each_role_by_release_and_state() -> None:
    instances = [
        {"role": "web", "release": "v2", "state": "ready"},
        {"role": "web", "release": "v2", "state": "ready"},
        {"role": "web", "release": "v1", "state": "draining"},
        {"role": "mailer", "release": "v2", "state": "ready"},
    ]
    assert role_summary(instances) == {
        "mailer": "v2 ready 1",
        "web": "v1 draining 1, v2 ready 2",
    }
