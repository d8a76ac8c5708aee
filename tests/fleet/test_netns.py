"""The test hosts themselves: private addresses only, sshd per host, torn down after."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fleet.conftest import MakeFleet
from fleet.netns import run


def ssh(fleet_key: str, address: str, known_hosts: str, *command: str) -> str:
    argv = [
        "ssh",
        "-i",
        fleet_key,
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=10",
        f"root@{address}",
        *command,
    ]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def test_each_host_runs_its_own_sshd_in_its_own_namespace(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(2)
    known = fleet.workdir / "known_hosts"
    known.write_text("".join(fleet.known_hosts_line(h) + "\n" for h in fleet.hosts))
    for host in fleet.hosts:
        inside = ssh(str(fleet.client_key), host.address, str(known), "ip", "-o", "-4", "addr")
        addresses = {
            word.split("/")[0] for word in inside.split() if word[:1].isdigit() and "/" in word
        }
        assert addresses == {"127.0.0.1", host.address}
        assert host.netns in ssh(
            str(fleet.client_key), host.address, str(known), "ip", "netns", "identify"
        )


def test_hosts_reach_each_other_and_the_controller_only_on_the_bridge(
    make_fleet: MakeFleet,
) -> None:
    fleet = make_fleet(2)
    first, second = fleet.hosts
    routes = first.exec("ip", "-4", "route").stdout
    assert "default" not in routes
    first.exec("python3", "-c", connect_probe(second.address, 5))


def test_a_cut_link_stops_answering_until_restored(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(1)
    (host,) = fleet.hosts
    probe = connect_probe(host.address, 1)
    host.cut()
    assert run("python3", "-c", probe, check=False).returncode != 0
    host.restore()
    run("python3", "-c", probe)


def test_close_removes_namespaces_links_and_processes(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(2)
    sleeper = fleet.hosts[0].exec("sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!").stdout
    fleet.close()
    namespaces = run("ip", "netns", "list").stdout
    links = run("ip", "-o", "link").stdout
    for host in fleet.hosts:
        assert host.netns not in namespaces
        assert host.veth not in links
    assert fleet.bridge not in links
    assert not alive(int(sleeper))


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan's zombie waits for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def connect_probe(address: str, timeout: float) -> str:
    """Python code that connects to ``address:22`` and fails when it cannot."""
    return f"import socket; socket.create_connection(({address!r}, 22), timeout={timeout}).close()"
