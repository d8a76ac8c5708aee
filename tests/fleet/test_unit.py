"""The agent's systemd unit on a fleet host, the commands bootstrap runs to start it, and how a
failed call for a host's step reaches the planner."""

from __future__ import annotations

import pytest

from nonstop.config.fleet import HostConfig
from nonstop.fleet.bootstrap import HostLayout, host_unit, unit_commands, unit_target
from nonstop.fleet.controller import with_call_error
from nonstop.fleet.plan import FleetState, HostView, Retry
from nonstop.fleet.status import HostStatus, note_retries, retry_notes
from nonstop.host import unit


def test_a_root_login_gets_a_system_unit_running_the_hosts_venv() -> None:
    host = HostConfig(name="web1", address="10.0.0.11", path="/srv/shop")
    spec = host_unit("shop", host)
    text = unit.render(spec)
    assert "ExecStart=/srv/shop/venv/bin/python -m nonstop.agent /srv/shop/project\n" in text
    assert "ExecStop=/srv/shop/venv/bin/python -m nonstop.cli down --keep\n" in text
    assert "WorkingDirectory=/srv/shop/project\n" in text
    assert "Environment=PATH=/srv/shop/venv/bin:/usr/local/bin:/usr/bin:/bin\n" in text
    assert "KillMode=process\n" in text  # instances and router outlive an agent restart
    assert "WantedBy=multi-user.target\n" in text
    assert "User=" not in text
    assert unit_target(spec) == ("/etc/systemd/system/nonstop-shop.service")
    commands = unit_commands(spec, HostLayout("/srv/shop"))
    assert commands.startswith(
        "cd /srv/shop/project && (/srv/shop/venv/bin/nonstop down --keep >/dev/null 2>&1 || true)"
        " && systemctl daemon-reload && systemctl enable --now nonstop-shop.service && "
    )


def test_another_login_gets_a_user_unit_under_its_home() -> None:
    host = HostConfig(name="web1", address="10.0.0.11", user="deploy")
    spec = host_unit("my shop", host)
    assert spec.user_unit
    assert unit_target(spec) == (".config/systemd/user/nonstop-my_shop.service")
    assert "WantedBy=default.target\n" in unit.render(spec)
    commands = unit_commands(spec, HostLayout(host.path))
    assert "systemctl --user enable --now nonstop-my_shop.service" in commands


@pytest.mark.parametrize(
    ("view", "errors", "calling", "trouble", "failed", "in_flight"),
    [
        (HostView("web1"), {}, False, "", None, False),
        (
            HostView("web1"),
            {"web1": ("its agent did not answer", False)},
            False,
            "its agent did not answer",
            None,
            False,
        ),
        (
            HostView("web1"),
            {"web1": ('release "v 2" is not a name', True)},
            False,
            "",
            'release "v 2" is not a name',
            False,
        ),
        # A refusal by a host that does not answer now: not a verdict, a retry's reason.
        (
            HostView("web1", reachable=False, trouble="no answer in time"),
            {"web1": ("refused", True)},
            False,
            "no answer in time",
            None,
            False,
        ),
        (HostView("web1"), {"web2": ("elsewhere", False)}, True, "", None, True),
    ],
)
def test_a_failed_call_reaches_the_planner_as_trouble_or_failure(
    view: HostView,
    errors: dict[str, tuple[str, bool]],
    calling: bool,
    trouble: str,
    failed: str | None,
    in_flight: bool,
) -> None:
    seen = with_call_error(view, errors, calling=calling)
    assert (seen.trouble, seen.failed, seen.calling) == (trouble, failed, in_flight)


def test_fleet_status_names_the_attempt_a_host_waits_for() -> None:
    spec = {"retries": 3}
    state = FleetState(
        "batch",
        0,
        batch=("web1", "web2", "web3"),
        retries=(
            Retry("web1", 1, 21, "unreachable: no answer in time"),
            Retry("web2", 2, 23, ""),  # its retry took: it moves
            Retry("web3", 4, 30, "its agent shows no rollout to v2"),
        ),
    )
    assert retry_notes(spec, state.to_dict()) == {
        "web1": "retrying (attempt 2 of 4): unreachable: no answer in time",
        "web3": "last attempt (4 of 4) made: its agent shows no rollout to v2",
    }
    rows = [HostStatus("web1", "10.0.0.11:22", "agent down"), HostStatus("web2", "", "ready")]
    rollout = {"status": "running", "spec": spec, "state": state.to_dict()}
    note_retries(rows, rollout)
    assert [row.retrying for row in rows] == [
        "retrying (attempt 2 of 4): unreachable: no answer in time",
        "",
    ]
    paused = {**rollout, "state": {**state.to_dict(), "paused": "host web1 is unreachable"}}
    note_retries(rows := [HostStatus("web1", "", "agent down")], paused)
    assert rows[0].retrying == ""  # paused: the rollout line says why, nothing is retried
