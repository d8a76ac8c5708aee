"""The systemd unit: its settings from a table, `systemd-analyze verify` on the real file, and
`nonstop service install` / `nonstop doctor` run for real as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nonstop.host.unit import UnitSpec, next_steps, render, unit_path
from nonstop_testing import require_binary

SPEC = UnitSpec(
    app="shop",
    project=Path("/srv/shop"),
    python="/srv/shop/.venv/bin/python",
    user_unit=False,
    run_as="deploy",
    path_env="/usr/local/bin:/usr/bin:/bin",
)


def settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # stop and restart signal the agent alone: instances (own sessions, same cgroup) stay
        ("KillMode", "process"),
        ("ExecStop", "/srv/shop/.venv/bin/python -m nonstop.cli down --keep"),
        ("ExecStart", "/srv/shop/.venv/bin/python -m nonstop.agent /srv/shop"),
        ("Restart", "on-failure"),
        ("RestartSec", "2"),
        ("StartLimitBurst", "5"),
        ("WantedBy", "multi-user.target"),
        ("User", "deploy"),
        ("WorkingDirectory", "/srv/shop"),
        ("LimitNOFILE", "65536"),
        ("Environment", "NONSTOP_PROJECT=/srv/shop"),
    ],
)
def test_system_unit_settings(key: str, value: str) -> None:
    assert value in settings(render(SPEC))[key]


def test_user_unit_has_no_user_and_starts_with_the_user_manager() -> None:
    spec = UnitSpec("shop", Path("/home/me/shop"), "/usr/bin/python3", user_unit=True)
    found = settings(render(spec))
    assert "User" not in found
    assert found["WantedBy"] == ["default.target"]
    assert unit_path(spec, Path("/home/me")) == Path(
        "/home/me/.config/systemd/user/nonstop-shop.service"
    )
    assert unit_path(SPEC, Path("/root")) == Path("/etc/systemd/system/nonstop-shop.service")
    assert next_steps(spec)[-1].startswith("loginctl enable-linger")


def test_odd_paths_are_quoted_and_escaped() -> None:
    spec = UnitSpec("shop", Path("/srv/my shop"), "/opt/py 3/bin/python", False, "deploy")
    found = settings(render(spec))
    assert found["ExecStart"] == ["'/opt/py 3/bin/python' -m nonstop.agent '/srv/my shop'"]
    spec = UnitSpec("shop", Path("/srv/100%"), "/usr/bin/python3", False, "deploy")
    assert settings(render(spec))["WorkingDirectory"] == ["/srv/100%%"]


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = require_binary("systemd-analyze")
    return subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    spec = UnitSpec("shop", project, sys.executable, user_unit=False, run_as=user)
    unit = tmp_path / spec.name
    unit.write_text(render(spec))
    done = verify(unit)
    assert done.returncode == 0, done.stderr
    assert spec.name not in done.stderr, done.stderr
    # The check is real: a unit whose program does not exist is refused.
    broken = UnitSpec("shop", project, str(tmp_path / "no-python"), False, user)
    unit.write_text(render(broken))
    refused = verify(unit)
    assert refused.returncode != 0
    assert "no-python" in refused.stderr


def nonstop(
    project: Path, *args: str, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NONSTOP_PROJECT": str(project)}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "nonstop.cli", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "nonstop.toml").write_text(
        '[app]\nname = "shop"\ncommand = "python3 app.py --port {port}"\n'
    )
    return root


def test_service_install_writes_a_user_unit(project: Path, tmp_path: Path) -> None:
    done = nonstop(project, "service", "install", "--user", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "home" / ".config" / "systemd" / "user" / "nonstop-shop.service"
    assert done.stdout.startswith(f"wrote {unit}\nnext:\n")
    assert "systemctl --user enable --now nonstop-shop.service" in done.stdout
    assert f"ExecStart={sys.executable} -m nonstop.agent {project}" in unit.read_text()


def test_service_install_dry_run_writes_nothing(project: Path, tmp_path: Path) -> None:
    done = nonstop(project, "service", "install", "--user", "--dry-run", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert "(not written: --dry-run)" in done.stdout
    assert "KillMode=process" in done.stdout
    assert not (tmp_path / "home" / ".config").exists()
    done = nonstop(project, "service", "install", "--dry-run", "--json", home=tmp_path / "home")
    data = json.loads(done.stdout)
    assert data["path"] == "/etc/systemd/system/nonstop-shop.service"
    assert data["written"] is False
    assert "KillMode=process" in data["unit"]
    assert data["next"][-1] == "systemctl status nonstop-shop.service"


def test_service_install_usage_errors(project: Path, tmp_path: Path) -> None:
    done = nonstop(project, "service", "install", "--user", "--run-as", "x", home=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "error: --run-as: a user unit runs as its user; drop --run-as or --user\n"
    done = nonstop(project, "service", "install", "--dry-run", "--run-as", "no-such-user-x")
    assert (done.returncode, done.stderr) == (
        2,
        "error: --run-as: there is no user 'no-such-user-x' on this host\n",
    )
    (project / "nonstop.toml").write_text("[app]\n")
    done = nonstop(project, "service", "install", "--dry-run", home=tmp_path)
    assert done.returncode == 2
    assert "app.name" in done.stderr
    assert "Traceback" not in done.stderr


def test_doctor_runs_for_real(project: Path) -> None:
    with socket.socket() as taken:  # the router's port, held by someone else (this test)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (project / "nonstop.toml").open("a") as config:
            config.write(f'[router]\nlisten = "127.0.0.1:{port}"\n')
        done = nonstop(project, "doctor", "--json")
        text = nonstop(project, "doctor")
    report = json.loads(done.stdout)
    by_check = {f["check"]: f for f in report["findings"]}
    assert by_check["python"]["status"] == "ok"
    assert by_check["config"]["status"] == "ok"
    assert by_check["router"]["message"].startswith("caddy v2.")
    assert by_check["disk"]["status"] in ("ok", "warning", "problem")
    assert by_check["port router.listen"]["status"] == "problem"
    assert by_check["port router.listen"]["message"].startswith(
        f"127.0.0.1:{port} is already in use by pid {os.getpid()} ("
    )
    problems = [f for f in report["findings"] if f["status"] == "problem"]
    assert report["ok"] is False
    assert done.returncode == 1
    assert text.returncode == 1
    assert "python: Python 3." in text.stdout
    for problem in problems:
        assert f"fix: {problem['fix']}" in text.stdout


def test_service_uninstall_refuses_an_enabled_unit_then_removes_it(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert nonstop(project, "service", "install", "--user", home=home).returncode == 0
    units = home / ".config" / "systemd" / "user"
    link = units / "default.target.wants" / "nonstop-shop.service"
    link.parent.mkdir()
    link.symlink_to(units / "nonstop-shop.service")  # what `systemctl --user enable` does
    refused = nonstop(project, "service", "uninstall", "--user", home=home)
    assert (refused.returncode, refused.stderr) == (
        1,
        "error: nonstop-shop.service is enabled: run `systemctl --user disable --now "
        "nonstop-shop.service` first (the app keeps serving; `nonstop up -d` runs the agent by "
        "hand)\n",
    )
    link.unlink()
    done = nonstop(project, "service", "uninstall", "--user", home=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"removed {units / 'nonstop-shop.service'}; next: systemctl --user daemon-reload\n"
    )
    again = nonstop(project, "service", "uninstall", "--user", home=home)
    assert again.returncode == 2
    assert again.stderr.startswith("error: there is no ")
