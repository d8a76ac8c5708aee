"""``nonstop service install``: a systemd unit for the agent (docs/service.md)."""

from __future__ import annotations

import click


@click.group()
def service() -> None:
    """Run the agent as a systemd service."""


@service.command()
@click.option("--user", "user_unit", is_flag=True, help="A user unit (systemctl --user).")
@click.option(
    "--dry-run", is_flag=True, help="Print the unit and where it would go; write nothing."
)
@click.option(
    "--run-as",
    metavar="USER",
    default=None,
    help="System units: the account (default: the project's owner).",
)
@click.option("--json", "as_json", is_flag=True, help="Print path, unit and next steps as JSON.")
def install(user_unit: bool, dry_run: bool, run_as: str | None, as_json: bool) -> None:
    """Write a systemd unit that starts the agent at boot, restarts it on a crash, and stops
    it without stopping the app's instances."""
    import os
    import pwd
    import sys
    from pathlib import Path

    from nonstop.cli.common import print_json, project_paths
    from nonstop.config import load_config
    from nonstop.errors import UsageError
    from nonstop.host import unit

    paths = project_paths()
    config = load_config(paths.config)  # bad config: exit 2 before writing anything
    if run_as is not None and user_unit:
        raise UsageError("--run-as: a user unit runs as its user; drop --run-as or --user")
    if not user_unit and run_as is None:
        run_as = pwd.getpwuid(paths.project.stat().st_uid).pw_name
    elif run_as is not None:
        try:
            pwd.getpwnam(run_as)
        except KeyError:
            raise UsageError(f"--run-as: there is no user {run_as!r} on this host") from None
    spec = unit.UnitSpec(
        app=config.app.name,
        project=paths.project,
        python=sys.executable,
        user_unit=user_unit,
        run_as=run_as,
        path_env=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
    )
    target = unit.unit_path(spec, Path.home())
    text = unit.render(spec)
    if not dry_run:
        write_unit(target, text)
    steps = unit.next_steps(spec)
    if as_json:
        data = {"path": str(target), "written": not dry_run, "unit": text, "next": steps}
        print_json(data)
    elif dry_run:
        click.echo(f"# {target} (not written: --dry-run)")
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {target}\nnext:")
        for step in steps:
            click.echo(f"  {step}")


@service.command()
@click.option("--user", "user_unit", is_flag=True, help="The user unit (systemctl --user).")
def uninstall(user_unit: bool) -> None:
    """Remove the unit `service install` wrote (once it is disabled). Instances keep serving."""
    import sys
    from pathlib import Path

    from nonstop.cli.common import project_paths
    from nonstop.config import load_config
    from nonstop.errors import StateError, UsageError
    from nonstop.host import unit

    paths = project_paths()
    spec = unit.UnitSpec(
        load_config(paths.config).app.name, paths.project, sys.executable, user_unit
    )
    target, systemctl = (
        unit.unit_path(spec, Path.home()),
        "systemctl --user" if user_unit else "systemctl",
    )
    if unit.wanted_by_link(spec, Path.home()).is_symlink():
        raise StateError(
            f"{spec.name} is enabled: run `{systemctl} disable --now {spec.name}` first "
            "(the app keeps serving; `nonstop up -d` runs the agent by hand)"
        )
    try:
        target.unlink()
    except FileNotFoundError:
        raise UsageError(f"there is no {target} to remove") from None
    except PermissionError:
        raise UsageError(f"cannot remove {target}: permission denied (run it with sudo)") from None
    click.echo(f"removed {target}; next: {systemctl} daemon-reload")


def write_unit(target: object, text: str) -> None:
    """Write atomically; a permission problem is one sentence (exit 2) naming the remedy."""
    import os
    from pathlib import Path

    from nonstop.errors import UsageError

    assert isinstance(target, Path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except PermissionError:
        raise UsageError(
            f"cannot write {target}: permission denied (a system unit needs root: run it with "
            "sudo, or use --user for a user unit)"
        ) from None
