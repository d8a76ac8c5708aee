"""The ``[fleet]`` table of nonstop.toml: the hosts, their roles, and what sits in front.

::

    [fleet]
    known_hosts = "~/.config/nonstop/known_hosts"   # default: .nonstop/fleet/known_hosts
    max_unavailable = 1          # rolling: hosts out of service at once
    batch_wait = "10s"           # rolling: wait between host batches
    canary = ["web1"]            # canary: the host(s) that take the new release first
    on_host_lost = "pause"       # or "continue": finish on the hosts that still answer

    [fleet.front]
    kind = "edge"                # HAProxy managed through its runtime API, weights per host
    on = "controller"            # or the name of a host with the "edge" role
    listen = "10.0.0.1:80"
    switch = "edge"              # blue-green and rollback: one change at the edge (default
                                 # with HAProxy on the hosts), or "hosts": each host switches

    [[fleet.hosts]]
    name = "web1"
    address = "10.0.0.11"
    user = "deploy"
    key = "~/.ssh/id_ed25519"
    roles = ["web"]
    labels = { zone = "a" }

Every error names its path (``fleet.hosts[2].address: ...``), like the rest of the file.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nonstop.config.units import Duration

HOST_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
Role = Literal["web", "worker", "edge"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def web_only() -> list[Role]:
    return ["web"]


def address_problem(value: str) -> str | None:
    """Why ``value`` is neither an IP address nor a DNS name, or None."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    dns = len(value) <= 253 and all(HOSTNAME_LABEL.fullmatch(label) for label in labels)
    if dns and not all(label.isdigit() for label in labels):
        return None
    example = '"10.0.0.11" or "web1.internal"'
    return f'expected an IP address or a DNS name such as {example}, got "{value}"'


class HostConfig(Model):
    name: str = Field(pattern=HOST_NAME)
    """Short name used in status, events and commands (``nonstop fleet trust web1``)."""
    address: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_-]{0,31}\$?$")
    key: str | None = None
    """Private key file; none: the SSH agent's keys and ~/.ssh/id_* (asyncssh's defaults)."""
    path: str = "/var/lib/nonstop"
    """Where nonstop lives on the host: its venv, the project, the agent's state."""
    python: str = "python3"
    """The host's Python (the controller's minor version: the wheels are built there)."""
    roles: list[Role] = Field(default_factory=web_only, min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        problem = address_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f'expected an absolute path such as "/var/lib/nonstop", got "{value}"')
        return value

    @model_validator(mode="after")
    def _worker_with_web(self) -> HostConfig:
        if "worker" in self.roles and "web" not in self.roles:
            raise ValueError(
                'roles: a "worker" host needs "web" too in this version (its agent runs the web '
                'role of every release; the edge sends it traffic): roles = ["web", "worker"]'
            )
        return self

    @property
    def serves(self) -> bool:
        return "web" in self.roles


class FrontConfig(Model):
    kind: Literal["edge", "external"] = "edge"
    on: str = "controller"
    """edge: where the HAProxy runs: "controller" (this machine) or a host with the edge role."""
    listen: str = "127.0.0.1:8080"
    """edge: the address users reach."""
    health_path: str = "/health"
    """external: the path the load balancer checks on each host's router; a draining host
    answers 503 there."""
    drain_wait: Duration = 10.0
    """external: how long the load balancer takes to notice a failing health check (its
    interval times its fall count): a host takes no new requests after that."""
    switch: Literal["edge", "hosts"] | None = None
    """How a blue-green fleet switch (and a fleet rollback) moves users: "edge" pins the
    release at the edge, one change for every host at once (decision 0581; needs
    ``router.kind = "haproxy"`` on the hosts); "hosts" switches each host's own router, one
    call per host. Unset: "edge" where it can be, "hosts" otherwise."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f'expected "host:port" such as "10.0.0.1:80", got "{value}"')
        return value

    @field_validator("health_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f'expected a path starting with "/", got "{value}"')
        return value


class FleetConfig(Model):
    hosts: list[HostConfig]
    front: FrontConfig = Field(default_factory=FrontConfig)
    router_port: int = Field(default=8080, ge=1, le=65535)
    """Each host's router listens on the host's address at this port (the front sends there)."""
    known_hosts: str = ".nonstop/fleet/known_hosts"
    """Host keys this controller trusts (OpenSSH format); relative to the project."""
    max_unavailable: int = Field(default=1, ge=1)
    batch_wait: Duration = 0.0
    canary: list[str] = Field(default_factory=list)
    """Hosts that take the new release first (default: the first host that serves)."""
    on_host_lost: Literal["pause", "continue"] = "pause"
    connect_timeout: Duration = Field(default=10.0, gt=0)
    analysis_duration: Duration = 30.0
    """canary: how long the canary hosts serve before the fleet-wide analysis may pass (the
    thresholds are ``[watch] max_error_rate`` and ``min_requests``, counted at the edge)."""
    retries: int = Field(default=4, ge=0, le=20)
    """How many more times the controller tries a host's step (deploy, start held, switch)
    that did not take - the link dropped, its agent restarting, a timeout - before
    ``on_host_lost`` (a host that does not answer) or a rollback (one that does) applies."""
    retry_backoff: Duration = Field(default=1.0, gt=0)
    """The wait before the first retry, doubled for each next one (1 s, 2 s, 4 s, 8 s): with
    the defaults the last attempt goes 15 s after the first failed, time for a host's agent to
    be restarted by its unit (2 s) and start under load."""
    host_watch: Duration = 10.0
    """How long each host's own rollout watches its instances after switching (its
    ``[watch] duration`` for fleet deploys): the fleet-wide analysis is the edge's."""

    @field_validator("hosts")
    @classmethod
    def _some(cls, value: list[HostConfig]) -> list[HostConfig]:
        if not value:
            raise ValueError('needs at least one host: [[fleet.hosts]] name = "web1" address = ...')
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FleetConfig:
        problem = (
            duplicate_problem(self.hosts)
            or front_problem(self.front, self.hosts)
            or canary_problem(self.canary, self.hosts)
        )
        if problem:
            raise ValueError(problem)
        return self

    def host(self, name: str) -> HostConfig:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise KeyError(f'no host "{name}" in [fleet] (hosts: {known})')

    @property
    def web_hosts(self) -> list[HostConfig]:
        return [h for h in self.hosts if h.serves]

    def runs_workers(self, host: HostConfig) -> bool:
        """Whether ``host`` runs the ``[processes]`` roles: the hosts with the "worker" role, or
        every host when none has it."""
        placed = any("worker" in h.roles for h in self.hosts)
        return "worker" in host.roles or not placed

    @property
    def canary_hosts(self) -> list[str]:
        return list(self.canary) or [self.web_hosts[0].name]


def duplicate_problem(hosts: list[HostConfig]) -> str | None:
    names: dict[str, int] = {}
    targets: dict[tuple[str, int, str], int] = {}
    for index, host in enumerate(hosts):
        if host.name in names:
            return f'hosts[{index}].name: "{host.name}" is already hosts[{names[host.name]}]'
        names[host.name] = index
        target = (host.address, host.port, host.path)
        if target in targets:
            return (
                f"hosts[{index}].address: {host.address}:{host.port} with path {host.path} is "
                f"already hosts[{targets[target]}]"
            )
        targets[target] = index
    if not any(host.serves for host in hosts):
        return 'hosts: no host has the "web" role'
    return None


def front_problem(front: FrontConfig, hosts: list[HostConfig]) -> str | None:
    if front.switch == "edge" and front.kind != "edge":
        return (
            'front.switch: "edge" needs kind = "edge" (an external load balancer cannot pin a '
            'release for every host): set switch = "hosts" or leave it unset'
        )
    if front.kind != "edge" or front.on == "controller":
        return None
    for host in hosts:
        if host.name == front.on:
            if "edge" in host.roles:
                return None
            return f'front.on: host "{front.on}" needs the "edge" role to run the edge router'
    return f'front.on: expected "controller" or a host name, got "{front.on}"'


def switches_at_edge(fleet: FleetConfig, router_kind: str) -> bool:
    """Whether blue-green switches and rollbacks pin the release at the edge (decision 0581):
    asked for, or unset with an edge in front and HAProxy on the hosts (their routers honour
    the edge's stamp; Caddy and nginx cannot)."""
    if fleet.front.kind != "edge" or fleet.front.switch == "hosts":
        return False
    return router_kind == "haproxy"


def canary_problem(canary: list[str], hosts: list[HostConfig]) -> str | None:
    serving = {host.name for host in hosts if host.serves}
    for index, name in enumerate(canary):
        if name not in serving:
            return f'canary[{index}]: "{name}" is not a host with the "web" role'
    if canary and set(canary) >= serving:
        return "canary: every web host is a canary host; leave at least one for the rest"
    return None
