"""Hosts over SSH (asyncssh): verified host keys, commands, files, and the agent's socket.

Host keys are checked against one known_hosts file (OpenSSH format, ``[fleet] known_hosts``).
A host whose key is not there is refused until someone trusts it explicitly (``nonstop fleet
trust HOST`` or ``--trust-new``, which record the key the host shows and print its SHA256
fingerprint to compare). A host whose key *changed* is always refused, with both fingerprints.

The controller never opens a port on a host: it reaches the host's agent by forwarding a local
unix socket (in a 0700 directory of its own) to the agent's socket on the host over the SSH
connection (OpenSSH's ``direct-streamlocal``), so the agent API stays a unix socket there.
The local end is ours (``Forward``): when a connection is dropped, every local connection it
carried is closed with it, so a cut link never leaves a socket open in the controller.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import asyncssh

from nonstop.agent.client import decode
from nonstop.config.fleet import HostConfig
from nonstop.errors import DriverError, UsageError

T = TypeVar("T")


class HostError(DriverError):
    """A host could not be reached, authenticated or commanded; says which and why."""


def known_hosts_pattern(host: HostConfig) -> str:
    """The first field of the host's known_hosts line (``[addr]:port`` off port 22)."""
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


def where(host: HostConfig) -> str:
    return f"{host.name} ({host.user}@{host.address}:{host.port})"


@dataclass(frozen=True, slots=True)
class KnownHosts:
    path: Path

    def entries(self) -> dict[str, list[str]]:
        """pattern -> the ``type base64`` keys recorded for it."""
        found: dict[str, list[str]] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return found
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and not line.startswith("#"):
                for pattern in fields[0].split(","):
                    found.setdefault(pattern, []).append(f"{fields[1]} {fields[2]}")
        return found

    def knows(self, host: HostConfig) -> bool:
        return known_hosts_pattern(host) in self.entries()

    def record(self, host: HostConfig, key: asyncssh.SSHKey) -> None:
        """Append the host's key (the file and its directory are created private)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        public = key.export_public_key("openssh").decode().split()
        line = f"{known_hosts_pattern(host)} {public[0]} {public[1]}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(line)


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


async def fetch_host_key(host: HostConfig, timeout: float) -> asyncssh.SSHKey:
    """The key ``host`` shows (no authentication happens)."""
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(host.address, host.port), timeout)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise HostError(f"cannot reach {where(host)}: {reason(exc)}") from exc
    if key is None:
        raise HostError(f"{where(host)} showed no host key")
    return key


async def trust(host: HostConfig, known: KnownHosts, timeout: float) -> tuple[str, bool]:
    """Record the key ``host`` shows unless one is already recorded; ``(fingerprint, new)``.
    A recorded key that differs is refused: a changed host key is never trusted silently."""
    key = await fetch_host_key(host, timeout)
    shown = key.export_public_key("openssh").decode().split()
    recorded = known.entries().get(known_hosts_pattern(host), [])
    if f"{shown[0]} {shown[1]}" in recorded:
        return fingerprint(key), False
    if recorded:
        raise HostError(changed_key_message(host, known, fingerprint(key)))
    known.record(host, key)
    return fingerprint(key), True


def changed_key_message(host: HostConfig, known: KnownHosts, shown: str) -> str:
    return (
        f"the host key of {where(host)} CHANGED: it shows {shown}, which {known.path} does not "
        "hold for it. Someone may be in the middle, or the host was reinstalled: check with its "
        f"owner, then remove its line from {known.path} and run `nonstop fleet trust {host.name}`"
    )


def reason(exc: BaseException) -> str:
    """What went wrong, in words, without class names."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, asyncssh.PermissionDenied):
        return "the key was refused (is its public half in the host's authorized_keys?)"
    if isinstance(exc, asyncssh.Error):
        return exc.reason or "the SSH connection failed"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or "the connection failed"


@dataclass
class Ran:
    exit_status: int
    stdout: str
    stderr: str


class HostConnection:
    """One SSH connection to one host, opened with :meth:`open`."""

    def __init__(self, host: HostConfig, conn: asyncssh.SSHClientConnection) -> None:
        self.host = host
        self.conn = conn
        self._sockets: tempfile.TemporaryDirectory[str] | None = None
        self._forwards: dict[str, tuple[str, Forward]] = {}

    @classmethod
    async def open(
        cls, host: HostConfig, known: KnownHosts, *, timeout: float = 10.0, trust_new: bool = False
    ) -> HostConnection:
        if not known.knows(host):
            if not trust_new:
                raise HostError(
                    f"the host key of {where(host)} is not known: check it and run "
                    f"`nonstop fleet trust {host.name}` (or pass --trust-new)"
                )
            await trust(host, known, timeout)
        conn = await connect(host, known, timeout)
        return cls(host, conn)

    async def __aenter__(self) -> HostConnection:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._close_forwards()
        self.conn.close()
        await self.conn.wait_closed()
        self._remove_sockets()

    def abort(self) -> None:
        """Drop the connection at once (it failed): listeners, forwarded sessions, socket dir."""
        self._close_forwards()
        self.conn.abort()
        self._remove_sockets()

    def _close_forwards(self) -> None:
        for _, forward in self._forwards.values():
            forward.close()
        self._forwards.clear()

    def _remove_sockets(self) -> None:
        if self._sockets is not None:
            self._sockets.cleanup()
            self._sockets = None

    async def run(self, command: str, *, check: bool = True, timeout: float = 600.0) -> Ran:
        """Run a shell command on the host; with ``check``, a non-zero exit is a HostError
        quoting the end of its stderr."""
        try:
            result = await self.conn.run(command, check=False, timeout=timeout)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise HostError(
                f"{where(self.host)}: `{short(command)}` failed: {reason(exc)}"
            ) from exc
        ran = Ran(int(result.exit_status or 0), text(result.stdout), text(result.stderr))
        if check and ran.exit_status != 0:
            tail = (ran.stderr or ran.stdout).strip().splitlines()[-3:]
            detail = " / ".join(tail) or "no output"
            raise HostError(
                f"{where(self.host)}: `{short(command)}` exited {ran.exit_status}: {detail}"
            )
        return ran

    async def put(self, local: Path, remote: str) -> None:
        """Copy one file to the host over SFTP (written under a temporary name, then renamed,
        so a copy cut half-way never looks complete)."""
        partial = f"{remote}.partial"
        try:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.put(str(local), partial)
                await sftp.posix_rename(partial, remote)
        except (OSError, asyncssh.Error) as exc:
            raise HostError(
                f"{where(self.host)}: copying {local.name} failed: {reason(exc)}"
            ) from exc

    async def forward(self, remote_socket: str) -> str:
        """A local unix socket path whose connections reach ``remote_socket`` on the host."""
        if remote_socket in self._forwards:
            return self._forwards[remote_socket][0]
        if self._sockets is None:
            self._sockets = tempfile.TemporaryDirectory(prefix="nonstop-fleet-")
        local = os.path.join(self._sockets.name, f"{len(self._forwards)}.sock")
        forward = Forward(self.conn, remote_socket)
        try:
            await forward.listen(local)
        except OSError as exc:
            raise HostError(
                f"{where(self.host)}: cannot forward {remote_socket}: {reason(exc)}"
            ) from exc
        self._forwards[remote_socket] = (local, forward)
        return local


class Forward:
    """A local unix socket whose every connection is piped, over the SSH connection, to a unix
    socket on the host. Unlike asyncssh's own local forwarder, it closes the local end of every
    connection it carries when it is closed, even one whose SSH channel was still opening."""

    CHUNK = 65536

    def __init__(self, conn: asyncssh.SSHClientConnection, remote: str) -> None:
        self.conn = conn
        self.remote = remote
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def listen(self, local: str) -> None:
        self.server = await asyncio.start_unix_server(self._carry, path=local)

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        remote: asyncssh.SSHWriter[bytes] | None = None
        try:
            far_reader, remote = await self.conn.open_unix_connection(self.remote, encoding=None)
            await asyncio.gather(_pipe(reader, remote), _pipe(far_reader, writer))
        except (OSError, asyncssh.Error):
            pass  # the link or the agent went away: the client sees its connection close
        finally:
            if remote is not None:
                remote.close()
            writer.close()
            self.writers.discard(writer)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()


async def _pipe(
    source: asyncio.StreamReader | asyncssh.SSHReader[bytes],
    sink: asyncio.StreamWriter | asyncssh.SSHWriter[bytes],
) -> None:
    """Bytes from ``source`` to ``sink`` until the end, then the end too."""
    while data := await source.read(Forward.CHUNK):
        sink.write(data)
        await sink.drain()
    if sink.can_write_eof():
        sink.write_eof()


async def connect(
    host: HostConfig, known: KnownHosts, timeout: float
) -> asyncssh.SSHClientConnection:
    keys = [os.path.expanduser(host.key)] if host.key else ()
    options: dict[str, Any] = {"client_keys": keys} if keys else {}
    try:
        return await asyncssh.connect(
            host.address,
            host.port,
            username=host.user,
            known_hosts=str(known.path),
            connect_timeout=timeout,
            keepalive_interval=5,
            keepalive_count_max=3,
            **options,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        shown = fingerprint(await fetch_host_key(host, timeout))
        raise HostError(changed_key_message(host, known, shown)) from exc
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise HostError(f"cannot connect to {where(host)}: {reason(exc)}") from exc


def text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def short(command: str) -> str:
    return command if len(command) <= 80 else command[:77] + "..."


def quote(*words: str) -> str:
    return " ".join(shlex.quote(word) for word in words)


class RemoteAgent:
    """The agent API of one host, through its SSH connection (same answers as AgentClient)."""

    def __init__(self, connection: HostConnection, socket: str, token: str) -> None:
        self.connection = connection
        self.socket = socket
        self.token = token

    async def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        import aiohttp

        local = await self.connection.forward(self.socket)
        connector = aiohttp.UnixConnector(path=local)
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as session,
                session.request(method, f"http://agent{path}", json=body, headers=headers) as resp,
            ):
                raw, status = await resp.read(), resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise HostError(
                f"{where(self.connection.host)}: its agent did not answer: {reason(exc)}"
            ) from exc
        return decode(status, raw)


async def gather_per_host(
    hosts: list[HostConfig], work: Callable[[HostConfig], Awaitable[T]]
) -> dict[str, T | HostError]:
    """``work`` on every host at once; a host's HostError is its result, not everyone's."""

    async def one(host: HostConfig) -> T | HostError:
        try:
            return await work(host)
        except HostError as exc:
            return exc

    results = await asyncio.gather(*(one(host) for host in hosts))
    return {host.name: result for host, result in zip(hosts, results, strict=True)}


def require_known(hosts: list[HostConfig], names: tuple[str, ...]) -> list[HostConfig]:
    """The hosts named (all when none), or a UsageError naming the unknown one."""
    if not names:
        return hosts
    by_name = {host.name: host for host in hosts}
    for name in names:
        if name not in by_name:
            known = ", ".join(by_name)
            raise UsageError(f'no host "{name}" in [fleet] (hosts: {known})')
    return [by_name[name] for name in names]
