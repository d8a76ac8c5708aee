"""``nonstop fleet bootstrap``: nonstop installed on a host from wheels built here, its agent
started.

On the controller, ``pip wheel`` builds a wheel of this nonstop (from its source tree) and
collects wheels of its dependencies (from pip's cache or the controller's index, pinned by
constraints.txt when the tree has one). The host needs no index: over SSH each wheel the host
lacks is copied into ``PATH/wheels`` (SFTP, renamed into place once whole), a venv is made
with the host's Python at ``PATH/venv``, nonstop is installed with ``pip --no-index``, the
host's nonstop.toml is written to ``PATH/project`` and its agent is started there: as the
systemd unit of ``nonstop service install`` (host/unit.py, decision 0483) where systemd runs the
host, else detached (``nonstop up --detach``), which the report says; either way its instances
and router outlive the SSH session.

Layout on a host (``fleet.hosts[i].path``)::

    PATH/wheels/      the wheels copied over
    PATH/venv/        nonstop and its dependencies
    PATH/project/     nonstop.toml for this host, the app's files, .nonstop/ (agent state)

Each step is idempotent: a second bootstrap copies nothing already there, reinstalls only
nonstop itself, and leaves a running agent alone (the report says so).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nonstop import __version__
from nonstop.config.fleet import FleetConfig, HostConfig
from nonstop.config.schema import NonstopConfig
from nonstop.errors import NonstopError, UsageError
from nonstop.fleet.hostfile import host_toml
from nonstop.fleet.ssh import HostConnection, HostError, RemoteAgent, quote
from nonstop.host import unit

PROBE = """\
import json, sys
from pathlib import Path
from nonstop import __version__
from nonstop.agent.paths import Paths
paths = Paths(Path(sys.argv[1]))
print(json.dumps({"version": __version__, "socket": str(paths.socket),
                  "token": paths.read_token()}))
"""


def source_tree() -> Path:
    """The checkout this nonstop runs from (its pyproject.toml names the project nonstop)."""
    here = Path(__file__).resolve()
    for candidate in here.parents:
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and 'name = "nonstop"' in pyproject.read_text():
            return candidate
    raise UsageError(
        "`nonstop fleet bootstrap` builds its wheel from nonstop's source tree, and this nonstop "
        f"was not installed from one ({here.parent}); install it from a checkout (pip install -e)"
    )


def build_wheelhouse(dest: Path, source: Path | None = None) -> list[Path]:
    """Wheels of nonstop and every dependency in ``dest``; the list of files."""
    tree = source or source_tree()
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest)]
    if (tree / "constraints.txt").is_file():
        argv += ["--constraint", str(tree / "constraints.txt")]
    result = subprocess.run([*argv, str(tree)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " / ".join(result.stderr.strip().splitlines()[-3:])
        raise NonstopError(f"building the wheels of nonstop failed: {tail}")
    wheels = sorted(dest.glob("*.whl"))
    own_wheel(wheels)
    return wheels


def own_wheel(wheels: list[Path]) -> Path:
    for wheel in wheels:
        if wheel.name.startswith(f"nonstop-{__version__}-"):
            return wheel
    raise NonstopError(f"no wheel of nonstop {__version__} among {len(wheels)} built")


@dataclass(frozen=True, slots=True)
class HostLayout:
    root: str

    @property
    def wheels(self) -> str:
        return f"{self.root}/wheels"

    @property
    def venv(self) -> str:
        return f"{self.root}/venv"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def project(self) -> str:
        return f"{self.root}/project"

    @property
    def nonstop(self) -> str:
        return f"{self.venv}/bin/nonstop"


@dataclass
class BootstrapReport:
    host: str
    copied: int
    installed: str
    agent: str
    """"started" or "already running"."""


async def bootstrap_host(
    connection: HostConnection, wheels: list[Path], config: NonstopConfig, fleet: FleetConfig
) -> BootstrapReport:
    host = connection.host
    layout = HostLayout(host.path)
    await connection.run(quote("mkdir", "-p", layout.wheels, layout.project))
    await check_python(connection, host)
    copied = await copy_missing(connection, wheels, layout.wheels)
    await install(connection, layout, own_wheel(wheels).name)
    await write_host_config(connection, host, config, fleet, layout)
    agent = await start_agent(connection, layout, config.app.name)
    return BootstrapReport(host.name, copied, __version__, agent)


async def check_python(connection: HostConnection, host: HostConfig) -> None:
    """The host's Python must be the controller's minor version: the wheels are built here."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    ran = await connection.run(f"{quote(host.python)} -c {quote(probe)}", check=False)
    have = ran.stdout.strip()
    if ran.exit_status != 0:
        raise HostError(f"{host.name}: no Python at {host.python!r} (fleet.hosts[].python)")
    if have != want:
        raise HostError(
            f"{host.name}: {host.python} is Python {have}, the wheels built here are for {want}: "
            "point fleet.hosts[].python at a Python " + want
        )


async def copy_missing(connection: HostConnection, wheels: list[Path], folder: str) -> int:
    listing = await connection.run(quote("ls", "-1", folder))
    present = set(listing.stdout.split())
    missing = [wheel for wheel in wheels if wheel.name not in present]
    for wheel in missing:
        await connection.put(wheel, f"{folder}/{wheel.name}")
    return len(missing)


async def install(connection: HostConnection, layout: HostLayout, wheel: str) -> None:
    python = connection.host.python
    venv_ready = await connection.run(quote("test", "-x", layout.python), check=False)
    fresh = venv_ready.exit_status != 0
    if fresh:
        await connection.run(quote(python, "-m", "venv", layout.venv))
    pip = [layout.python, "-m", "pip", "install", "--quiet", "--no-index"]
    target = f"{layout.wheels}/{wheel}"
    await connection.run(quote(*pip, "--find-links", layout.wheels, target))
    if not fresh:  # a venv made just now has this very wheel: nothing older to replace
        await connection.run(quote(*pip, "--no-deps", "--force-reinstall", target))


async def write_host_config(
    connection: HostConnection,
    host: HostConfig,
    config: NonstopConfig,
    fleet: FleetConfig,
    layout: HostLayout,
) -> None:
    with tempfile.TemporaryDirectory(prefix="nonstop-fleet-") as folder:
        local = Path(folder) / "nonstop.toml"
        local.write_text(host_toml(config, host, fleet))
        await connection.put(local, f"{layout.project}/nonstop.toml")


SYSTEMD_PROBE = "test -d /run/systemd/system && command -v systemctl >/dev/null"
"""systemd runs this host (sd_booted(3): the directory exists only when systemd is PID 1)."""
NO_SYSTEMD = "detached: no systemd on the host, so nothing restarts it after a crash or a reboot"


def host_unit(app: str, host: HostConfig) -> unit.UnitSpec:
    """The agent's unit on ``host`` (host/unit.py): a system unit when nonstop logs in as root,
    else a user unit of the login user (it needs ``loginctl enable-linger`` to start at boot)."""
    layout = HostLayout(host.path)
    return unit.UnitSpec(
        app=app,
        project=Path(layout.project),
        python=layout.python,
        user_unit=host.user != "root",
        run_as=None,
        path_env=f"{layout.venv}/bin:/usr/local/bin:/usr/bin:/bin",
    )


def unit_target(spec: unit.UnitSpec) -> str:
    """Where the unit goes on the host; a user unit's path is relative to the login's home
    (where SFTP and SSH commands start)."""
    return str(unit.unit_path(spec, Path(".")))


def unit_commands(spec: unit.UnitSpec, layout: HostLayout) -> str:
    """Shell run on the host once the unit file is in place: an agent started by hand lets go
    (``down --keep``: instances and router keep serving, the unit's agent adopts them), then
    the unit is enabled and started, and the agent's socket is waited for (60 s)."""
    systemctl = "systemctl --user" if spec.user_unit else "systemctl"
    project = quote(layout.project)
    nonstop = quote(layout.nonstop)
    return (
        f"cd {project} && ({nonstop} down --keep >/dev/null 2>&1 || true) && "
        f"{systemctl} daemon-reload && {systemctl} enable --now {quote(spec.name)} && "
        f"for _ in $(seq 600); do {nonstop} status >/dev/null 2>&1 && exit 0; sleep 0.1; done; "
        f"echo 'the agent of {spec.name} did not answer within 60 s' >&2; exit 1"
    )


async def start_agent(connection: HostConnection, layout: HostLayout, app: str) -> str:
    """The agent as a systemd unit where systemd runs the host, else detached; what happened."""
    if (await connection.run(SYSTEMD_PROBE, check=False)).exit_status == 0:
        return await start_unit(connection, layout, host_unit(app, connection.host))
    command = f"cd {quote(layout.project)} && {quote(layout.nonstop, 'up', '--detach')}"
    ran = await connection.run(command + " --wait 60")
    if "already running" in ran.stdout:
        return "already running"
    return f"started ({NO_SYSTEMD})"


async def start_unit(connection: HostConnection, layout: HostLayout, spec: unit.UnitSpec) -> str:
    systemctl = "systemctl --user" if spec.user_unit else "systemctl"
    active = await connection.run(f"{systemctl} is-active {quote(spec.name)}", check=False)
    if active.stdout.strip() == "active":
        return f"already running ({spec.name})"
    target = unit_target(spec)
    await connection.run(quote("mkdir", "-p", target.rpartition("/")[0]))
    with tempfile.TemporaryDirectory(prefix="nonstop-fleet-") as tmp:
        local = Path(tmp) / spec.name
        local.write_text(unit.render(spec))
        await connection.put(local, target)
    await connection.run(unit_commands(spec, layout))
    return f"started as {spec.name}"


async def probe(connection: HostConnection) -> dict[str, Any]:
    """What is installed on the host and where its agent listens (no agent needed)."""
    layout = HostLayout(connection.host.path)
    ran = await connection.run(
        f"{quote(layout.python)} -c {quote(PROBE)} {quote(layout.project)}", check=False
    )
    if ran.exit_status != 0:
        return {"version": None, "socket": None, "token": None}
    data: dict[str, Any] = json.loads(ran.stdout)
    return data


async def remote_agent(connection: HostConnection) -> RemoteAgent:
    found = await probe(connection)
    if not found["version"]:
        raise HostError(
            f"{connection.host.name}: nonstop is not installed (`nonstop fleet bootstrap`)"
        )
    if not found["token"]:
        raise HostError(f"{connection.host.name}: its agent never ran (`nonstop fleet bootstrap`)")
    return RemoteAgent(connection, found["socket"], found["token"])
