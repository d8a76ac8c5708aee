"""Hosts over SSH against real sshd in network namespaces: host keys, commands, files, sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest

from fleet.conftest import MakeFleet
from fleet.netns import TestFleet, TestHost
from nonstop.config.fleet import HostConfig
from nonstop.fleet.ssh import HostConnection, HostError, KnownHosts, trust


def config_of(fleet: TestFleet, host: TestHost) -> HostConfig:
    return HostConfig(
        name=host.name, address=host.address, key=str(fleet.client_key), path=str(host.root)
    )


async def test_first_contact_needs_trust_then_connects(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(1)
    host = config_of(fleet, fleet.hosts[0])
    known = KnownHosts(fleet.workdir / "known_hosts")
    with pytest.raises(HostError, match=r"host key of host1 \(root@.*\) is not known: check it"):
        await HostConnection.open(host, known)
    shown, new = await trust(host, known, 10)
    assert new
    assert shown.startswith("SHA256:")
    assert known.path.read_text() == f"{fleet.known_hosts_line(fleet.hosts[0])}\n"
    assert await trust(host, known, 10) == (shown, False)
    async with await HostConnection.open(host, known) as connection:
        ran = await connection.run("ip netns identify")
        assert ran.stdout.strip() == fleet.hosts[0].netns


async def test_trust_new_records_on_first_contact(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(1)
    host = config_of(fleet, fleet.hosts[0])
    known = KnownHosts(fleet.workdir / "fleet" / "known_hosts")
    async with await HostConnection.open(host, known, trust_new=True) as connection:
        assert (await connection.run("echo hi")).stdout == "hi\n"
    assert known.knows(host)
    assert oct(known.path.stat().st_mode & 0o777) == "0o600"


async def test_a_changed_host_key_is_refused_with_both_fingerprints(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(1)
    host = config_of(fleet, fleet.hosts[0])
    known = KnownHosts(fleet.workdir / "known_hosts")
    other = asyncssh.generate_private_key("ssh-ed25519")
    known.record(host, other)
    with pytest.raises(HostError, match="CHANGED: it shows SHA256:") as info:
        await HostConnection.open(host, known)
    assert "nonstop fleet trust host1" in str(info.value)
    with pytest.raises(HostError, match="CHANGED"):
        await trust(host, known, 10)


async def test_a_refused_key_and_an_unreachable_host_say_so(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(1)
    host = config_of(fleet, fleet.hosts[0])
    known = KnownHosts(fleet.workdir / "known_hosts")
    await trust(host, known, 10)
    stranger = fleet.workdir / "stranger"
    stranger.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    refused = host.model_copy(update={"key": str(stranger)})
    with pytest.raises(HostError, match="the key was refused"):
        await HostConnection.open(refused, known)
    fleet.hosts[0].cut()
    with pytest.raises(HostError, match=r"cannot connect to host1 .*: no answer in time"):
        await HostConnection.open(host, known, timeout=1)


async def test_commands_files_and_a_forwarded_unix_socket(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(1)
    host = config_of(fleet, fleet.hosts[0])
    known = KnownHosts(fleet.workdir / "known_hosts")
    await trust(host, known, 10)
    payload = fleet.workdir / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 1000)
    remote_dir = fleet.hosts[0].root / "incoming"
    async with await HostConnection.open(host, known) as connection:
        with pytest.raises(HostError, match=r"host1 .*: `echo oops >&2; false` exited 1: oops"):
            await connection.run("echo oops >&2; false")
        await connection.run(f"mkdir -p {remote_dir}")
        await connection.put(payload, f"{remote_dir}/payload.bin")
        assert (remote_dir / "payload.bin").read_bytes() == payload.read_bytes()
        assert not (remote_dir / "payload.bin.partial").exists()
        socket_path = remote_dir / "echo.sock"
        await connection.run(f"{echo_server(socket_path)} </dev/null >/dev/null 2>&1 &")
        await connection.run(
            f"for i in $(seq 100); do [ -S {socket_path} ] && exit 0; sleep 0.1; done; exit 1"
        )
        local = await connection.forward(str(socket_path))
        reader, writer = await asyncio.open_unix_connection(local)
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        writer.close()
        await writer.wait_closed()
        assert await connection.forward(str(socket_path)) == local
    assert not Path(local).exists()


def echo_server(path: Path) -> str:
    code = (
        "import socket\n"
        f"s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r}); s.listen()\n"
        "c, _ = s.accept(); c.sendall(c.recv(100))\n"
    )
    return f"python3 -c {code!r}".replace("\\n", "\n")
