"""What ``nonstop up`` says about the router on this machine: the rule from worked examples, then
``nonstop up --detach`` itself on this machine (a real agent and router)."""

from __future__ import annotations

import pytest

from e2e.conftest import project, router_kind
from e2e.harness import AgentProcess, Project
from nonstop.drivers.router.choice import installed_routers, migrate_req, note, startup_note

RESET = (
    "router: Caddy (the default). Each routing change reloads it, and net.ipv4.tcp_migrate_req "
    "is 0: under heavy keep-alive load a change can reset a few connections (docs/router.md, "
    "Reloads)."
)
OLD_KERNEL = RESET.replace(
    "net.ipv4.tcp_migrate_req is 0", "this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14+)"
)
HAPROXY = ' HAProxy is installed here and changes weights without reloading: set [router] kind = "haproxy" to use it.'  # noqa: E501
NGINX = ' nginx is installed here and reloads on the same listening socket: set [router] kind = "nginx" to use it.'  # noqa: E501

__all__ = ["project", "router_kind"]  # the e2e fixtures: a project with the sample app

NOTES = [
    # the default Caddy, setting 0: the best router installed is named
    ("caddy", False, {"haproxy", "nginx"}, "0", RESET + HAPROXY),
    ("caddy", False, {"nginx"}, "0", RESET + NGINX),
    # nothing else installed: the sysctl that prevents the resets
    ("caddy", False, set(), "0",
     RESET + " `sysctl -w net.ipv4.tcp_migrate_req=1` (as root) prevents it."),
    # a kernel without the setting: no sysctl to advise
    ("caddy", False, {"nginx"}, None, OLD_KERNEL + NGINX),
    ("caddy", False, set(), None, OLD_KERNEL),
    # the kernel hands queued connections to the new socket: nothing to say
    ("caddy", False, {"haproxy", "nginx"}, "1", None),
    # a kind the user chose, Caddy included: nothing to say
    ("caddy", True, {"haproxy"}, "0", None),
    ("haproxy", True, {"haproxy"}, "0", None),
    ("nginx", True, set(), None, None),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "chosen", "installed", "setting", "expected"), NOTES)
def test_note(
    kind: str, chosen: bool, installed: set[str], setting: str | None, expected: str | None
) -> None:
    assert note(kind, chosen, installed, setting) == expected


def test_this_machine_is_read_as_it_is() -> None:
    assert installed_routers() <= {"haproxy", "nginx"}
    assert migrate_req() in ("0", "1", None)
    assert startup_note("caddy", False) == note("caddy", False, installed_routers(), migrate_req())
    assert startup_note("caddy", True) is None


@pytest.mark.slow
@pytest.mark.parametrize("chosen", [False, True], ids=["default", "chosen"])
def test_up_says_it_when_caddy_is_the_default(project: Project, chosen: bool) -> None:
    if not chosen:  # the harness writes kind = "caddy": without it, Caddy is the default
        config = project.paths.config
        config.write_text(config.read_text().replace('kind = "caddy"\n', "", 1))
    expected = None if chosen else startup_note("caddy", False)
    agent = AgentProcess(project)
    try:
        up = project.cli("up", "--detach")
        assert up.returncode == 0, up.stderr
        lines = up.stdout.splitlines()
        assert lines[0].startswith("agent running"), up.stdout
        assert lines[1:] == ([expected] if expected else []), up.stdout
    finally:
        agent.cleanup()
