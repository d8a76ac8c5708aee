"""An external load balancer for the fleet tests: a HAProxy the test configures itself (nonstop
never touches it), health-checking each host's router at ``/health`` as a cloud LB would."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.netns import wait_for_port
from fleet.site import Site, free_port
from nonstop.drivers.router.haproxy_process import find_haproxy, run_command

INTERVAL_MS, FALL, RISE = 200, 2, 2
DETECTION = "1s"
"""``front.drain_wait`` for this LB: it notices a host after FALL checks INTERVAL_MS apart
(0.4 s), and back after RISE (0.4 s); 1 s leaves room for a check in flight on a busy box."""

CONFIG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    retries 2
    option redispatch 1
frontend lb
    bind {listen}
    default_backend hosts
backend hosts
    balance roundrobin
    option httpchk GET /health
{servers}"""


@dataclass
class LoadBalancer:
    listen: str
    socket: Path

    async def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` rows of the host servers, by host name."""
        lines = (await run_command(self.socket, "show stat")).splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == "hosts" and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    async def transitions(self) -> dict[str, int]:
        """Per host, how often the LB's checks took it down (``chkdown``)."""
        return {name: int(row["chkdown"] or 0) for name, row in (await self.servers()).items()}

    async def wait_all_up(self, deadline: float) -> None:
        """Until every host passes the LB's checks (polling its state)."""
        while True:
            states = {name: row["status"] for name, row in (await self.servers()).items()}
            if set(states.values()) == {"UP"}:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the external load balancer never saw every host up: {states}")
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def load_balancer(site: Site, workdir: Path) -> Iterator[LoadBalancer]:
    """The LB on the controller's bridge address, running until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    gateway = site.fleet.gateway
    listen = f"{gateway}:{free_port(gateway)}"
    checks = f"check inter {INTERVAL_MS}ms fall {FALL} rise {RISE}"
    servers = "".join(f"    server {h.name} {h.address}:8080 {checks}\n" for h in site.fleet.hosts)
    socket = workdir / "lb.sock"
    config = workdir / "lb.cfg"
    config.write_text(CONFIG.format(socket=socket, listen=listen, servers=servers))
    log = (workdir / "lb.log").open("ab")
    argv = [str(find_haproxy()), "-db", "-f", str(config)]
    process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    log.close()
    try:
        host, port = listen.rsplit(":", 1)
        wait_for_port(host, int(port), time.monotonic() + 30, "the external load balancer")
        yield LoadBalancer(listen, socket)
    finally:
        process.kill()
        process.wait(10)
        socket.unlink(missing_ok=True)
