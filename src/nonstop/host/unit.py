"""The systemd unit that runs the agent (``nonstop service install``). Pure: the facts come in
as a :class:`UnitSpec`, the text goes out.

Why these settings (docs/service.md):

- ``KillMode=process``: on stop and restart systemd signals the agent only. Instances and the
  router run in their own sessions (decision 0200) but in the service's cgroup, so the default
  ``control-group`` would kill them with the agent - a restart of the agent would drop every
  request. The next agent adopts them (pid + start time), as after ``kill -9``.
- ``ExecStop=... down --keep``: the agent is asked to stop through its API and leaves
  instances and the router serving; ``SIGTERM`` (what ``down --keep`` amounts to) follows only
  if it is still there, and ``TimeoutStopSec`` bounds the whole stop.
- ``Restart=on-failure`` with a start limit (5 in 2 minutes): a crash or ``kill -9`` restarts
  it after 2 s; a clean stop does not.
- ``LimitNOFILE=65536``: the router inherits the agent's limits, and each proxied connection
  costs it two descriptors (``nonstop doctor`` checks the limit).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

OPEN_FILES = 65536


@dataclass(frozen=True)
class UnitSpec:
    app: str
    project: Path
    python: str
    """The interpreter that has nonstop installed (the one running the CLI)."""
    user_unit: bool
    """``systemctl --user``: no ``User=``, wanted by default.target."""
    run_as: str | None = None
    """System units: the account the agent runs as (the project's owner)."""
    path_env: str = "/usr/local/bin:/usr/bin:/bin"

    @property
    def name(self) -> str:
        return unit_name(self.app)


def unit_name(app: str) -> str:
    """``nonstop-<app>.service``, with anything systemd does not take in a name as ``_``.

    >>> unit_name("shop"), unit_name("my shop.v2")
    ('nonstop-shop.service', 'nonstop-my_shop.v2.service')
    """
    return f"nonstop-{re.sub(r'[^A-Za-z0-9:_.-]', '_', app)}.service"


def unit_path(spec: UnitSpec, home: Path) -> Path:
    if spec.user_unit:
        return home / ".config" / "systemd" / "user" / spec.name
    return Path("/etc/systemd/system") / spec.name


def wanted_by_link(spec: UnitSpec, home: Path) -> Path:
    """The symlink ``systemctl enable`` makes: the unit is enabled while it exists."""
    target = "default.target" if spec.user_unit else "multi-user.target"
    return unit_path(spec, home).parent / f"{target}.wants" / spec.name


def _quote(value: str) -> str:
    """A systemd command-line word: quoted when it needs it, ``%`` and ``$`` escaped."""
    escaped = value.replace("%", "%%").replace("$", "$$")
    return escaped if re.fullmatch(r"[A-Za-z0-9/._:=@+-]+", escaped) else shlex.quote(escaped)


def render(spec: UnitSpec) -> str:
    """The unit file's text."""
    python, project = _quote(spec.python), _quote(str(spec.project))
    target = "default.target" if spec.user_unit else "multi-user.target"
    unit = [
        "[Unit]",
        f"Description=nonstop agent for {spec.app} ({spec.project})",
        *([] if spec.user_unit else ["Wants=network-online.target"]),
        "After=network-online.target",
        "StartLimitIntervalSec=120",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=simple",
        *([f"User={spec.run_as}"] if spec.run_as and not spec.user_unit else []),
        f"WorkingDirectory={project}",
        f"Environment={_quote('PATH=' + spec.path_env)}",
        f"Environment={_quote('NONSTOP_PROJECT=' + str(spec.project))}",
        f"ExecStart={python} -m nonstop.agent {project}",
        f"ExecStop={python} -m nonstop.cli down --keep",
        "KillMode=process",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=90",
        "Restart=on-failure",
        "RestartSec=2",
        f"LimitNOFILE={OPEN_FILES}",
        "",
        "[Install]",
        f"WantedBy={target}",
    ]
    return "\n".join(unit) + "\n"


def next_steps(spec: UnitSpec) -> list[str]:
    """What to run after the file is written."""
    systemctl = "systemctl --user" if spec.user_unit else "systemctl"
    steps = [
        "nonstop down --keep   # if an agent started by `nonstop up` runs (instances keep serving)",
        f"{systemctl} daemon-reload",
        f"{systemctl} enable --now {spec.name}",
        f"{systemctl} status {spec.name}",
    ]
    if spec.user_unit:
        steps.append("loginctl enable-linger   # so user units start at boot, before any login")
    return steps
