"""Test hosts for real: network namespaces, each with its own sshd, on a private bridge.

``TestFleet.create(n, workdir)`` makes, under one file lock (several test workers may run):

- a bridge ``nsb<tag>`` in the controller's namespace, address ``10.203.K.1/24``, where K is the
  first /24 of 10.203.0.0/16 that no interface on this machine uses yet;
- per host ``i`` (1..n): a namespace ``nst<tag>-i``, a veth pair whose host end is ``eth0``
  inside the namespace with ``10.203.K.(10+i)/24``, its loopback up, and an sshd from the
  system's ``openssh-server`` listening only on that address, with its own host key, its own
  config and an authorized_keys holding the fleet's test key.

Nothing outside the namespaces' private link and loopback is ever configured or used: no default
route is added, so a host cannot reach anything but the bridge.

``close()`` kills every process left inside each namespace (sshd, agents, routers, app
instances started over SSH), deletes the namespaces (their veth ends go with them) and the
bridge. It runs even when a test fails, and is safe to call twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUBNET_PREFIX = "10.203"
LOCK_FILE = Path("/tmp/nonstop-test-netns.lock")
SSHD = "/usr/sbin/sshd"

SSHD_CONFIG = """\
Port 22
ListenAddress {address}
HostKey {host_key}
PidFile {pidfile}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
MaxSessions 64
MaxStartups 64:30:128
ClientAliveInterval 5
ClientAliveCountMax 3
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


def namespaces_problem() -> str | None:
    """Why this machine cannot give a test its own network namespaces, or None."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed (scripts/install-system-deps.sh installs it)"
    if not os.access(SSHD, os.X_OK):
        return "sshd is not installed (scripts/install-system-deps.sh installs openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (openssh-client)"
    probe = f"nsprobe{os.getpid()}"
    result = run("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip() or 'not permitted'}"
    run("ip", "netns", "del", probe, check=False)
    return None


def require_namespaces() -> None:
    """Skip (fail under CI=true) when namespaces with sshd cannot be made here."""
    problem = namespaces_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


def keygen(path: Path, comment: str) -> Path:
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path


def read_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def used_subnets() -> set[int]:
    """Third octets of 10.203.K.0/24 networks some interface of this machine already has."""
    output = run("ip", "-o", "-4", "addr", "show").stdout
    used = set()
    for word in output.split():
        if word.startswith(SUBNET_PREFIX + "."):
            used.add(int(word.split(".")[2]))
    return used


def wait_for_port(address: str, port: int, deadline: float, what: str) -> None:
    """Return once ``address:port`` accepts a connection; fail the test at ``deadline``."""
    while True:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not accept connections on {address}:{port}")
        time.sleep(0.05)  # polling a condition, not synchronising on time


@dataclass
class TestHost:
    """One test host: a namespace with an sshd on its private address."""

    __test__ = False  # not a test class

    name: str
    netns: str
    address: str
    veth: str
    """The host end inside the namespace is ``eth0``; this is the bridge end."""
    root: Path
    """The host's own directory (its sshd files; nonstop is installed under ``root/nonstop``)."""
    host_key: Path = field(init=False)
    sshd: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.host_key = self.root / "ssh_host_ed25519_key"

    @property
    def host_public_key(self) -> str:
        return Path(f"{self.host_key}.pub").read_text().strip()

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host's namespace (as the test's own user)."""
        return run("ip", "netns", "exec", self.netns, *argv, check=check)

    def cut(self) -> None:
        """Cut the host's link: its address stops answering, as a host lost to the network."""
        self.exec("ip", "link", "set", "eth0", "down")

    def restore(self) -> None:
        self.exec("ip", "link", "set", "eth0", "up")
        self.exec("ip", "addr", "replace", f"{self.address}/24", "dev", "eth0")

    def pids(self) -> list[int]:
        output = run("ip", "netns", "pids", self.netns, check=False).stdout
        return [int(pid) for pid in output.split()]

    def start_sshd(self, authorized_keys: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, f"host-key@{self.name}")
        config = self.root / "sshd_config"
        config.write_text(
            SSHD_CONFIG.format(
                address=self.address,
                host_key=self.host_key,
                pidfile=self.root / "sshd.pid",
                authorized_keys=authorized_keys,
            )
        )
        self.launch_sshd()

    def launch_sshd(self) -> None:
        """Start this host's sshd (again, after ``stop_sshd``: same key, same config)."""
        log = (self.root / "sshd.log").open("ab")
        config = self.root / "sshd_config"
        argv = ["ip", "netns", "exec", self.netns, SSHD, "-D", "-e", "-f", str(config)]
        self.sshd = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for_port(self.address, 22, time.monotonic() + 30, f"sshd of {self.name}")

    def stop_sshd(self) -> None:
        """Stop the listening sshd and every SSH session it serves (their processes are its
        session's children: sshd's own per-connection processes)."""
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            self.sshd.wait(10)
        for pid in self.pids():
            if read_cmdline(pid).startswith("sshd:"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def kill_everything(self) -> None:
        """SIGKILL every process inside the namespace (what tests started there), and wait."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)  # waiting for the kernel to reap, checked again above
        if self.sshd is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sshd.wait(10)


@dataclass
class TestFleet:
    """N test hosts on one private bridge, plus the client key that logs into all of them."""

    __test__ = False

    tag: str
    bridge: str
    gateway: str
    """The controller's own address on the bridge (where an edge router listens)."""
    workdir: Path
    client_key: Path
    hosts: list[TestHost] = field(default_factory=list)
    closed: bool = False

    @classmethod
    def create(cls, count: int, workdir: Path) -> TestFleet:
        workdir.mkdir(parents=True, exist_ok=True)
        client_key = keygen(workdir / "id_ed25519", "nonstop-fleet-test")
        authorized = workdir / "authorized_keys"
        shutil.copy(f"{client_key}.pub", authorized)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        tag = secrets.token_hex(3)
        with LOCK_FILE.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            free = sorted(set(range(1, 255)) - used_subnets())
            if not free:
                pytest.fail(f"every {SUBNET_PREFIX}.K.0/24 is in use on this machine")
            subnet = f"{SUBNET_PREFIX}.{free[0]}"
            fleet = cls(tag, f"nsb{tag}", f"{subnet}.1", workdir, client_key)
            try:
                fleet.make_links(count, subnet)
            except BaseException:
                fleet.close()
                raise
        try:
            for host in fleet.hosts:
                host.start_sshd(authorized)
        except BaseException:
            fleet.close()
            raise
        return fleet

    def make_links(self, count: int, subnet: str) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for index in range(1, count + 1):
            host = TestHost(
                name=f"host{index}",
                netns=f"nst{self.tag}-{index}",
                address=f"{subnet}.{10 + index}",
                veth=f"nsv{self.tag}{index}",
                root=self.workdir / f"host{index}",
            )
            self.hosts.append(host)
            self.make_host_link(host)

    def make_host_link(self, host: TestHost) -> None:
        run("ip", "netns", "add", host.netns)
        inner = f"nsi{self.tag}{self.hosts.index(host) + 1}"
        run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", host.netns)
        run("ip", "link", "set", host.veth, "master", self.bridge)
        run("ip", "link", "set", host.veth, "up")
        host.exec("ip", "link", "set", inner, "name", "eth0")
        host.exec("ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
        host.exec("ip", "link", "set", "eth0", "up")
        host.exec("ip", "link", "set", "lo", "up")

    def known_hosts_line(self, host: TestHost) -> str:
        """``address type base64`` (without the key's comment), as OpenSSH records it."""
        kind, key = host.host_public_key.split()[:2]
        return f"{host.address} {kind} {key}"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for host in self.hosts:
            host.stop_sshd()
            host.kill_everything()
            run("ip", "netns", "del", host.netns, check=False)
            run("ip", "link", "del", host.veth, check=False)
        run("ip", "link", "del", self.bridge, check=False)


@contextlib.contextmanager
def fleet_of(count: int, workdir: Path) -> Iterator[TestFleet]:
    """``count`` test hosts for the duration of the block, torn down after, even on failure."""
    require_namespaces()
    fleet = TestFleet.create(count, workdir)
    try:
        yield fleet
    finally:
        fleet.close()
