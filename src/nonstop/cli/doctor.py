"""``nonstop doctor``: checks the host and says how to fix each problem (docs/service.md)."""

from __future__ import annotations

from collections.abc import Sequence

import click

MARK = {"ok": "[green]ok[/]     ", "warning": "[yellow]warning[/]", "problem": "[red]problem[/]"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json: bool) -> None:
    """Check this host for the agent: router, ports, kernel, limits, disk. Exit 1 on a problem."""
    from nonstop.cli.common import print_json, project_paths
    from nonstop.host.doctor import diagnose
    from nonstop.host.facts import gather

    findings = diagnose(gather(project_paths()))
    problems = [f for f in findings if f.status == "problem"]
    if as_json:
        print_json({"ok": not problems, "findings": [f.to_dict() for f in findings]})
    else:
        show(findings)
    if problems:
        raise SystemExit(1)


def show(findings: Sequence[object]) -> None:
    from rich.console import Console
    from rich.markup import escape

    from nonstop.host.doctor import Finding

    console = Console(highlight=False, soft_wrap=True)
    for finding in findings:
        assert isinstance(finding, Finding)
        console.print(f"{MARK[finding.status]}  {finding.check}: {escape(finding.message)}")
        if finding.fix and finding.status != "ok":
            console.print(f"           fix: {escape(finding.fix)}")
    problems = sum(f.status == "problem" for f in findings if isinstance(f, Finding))
    console.print("no problem found" if not problems else f"{problems} problem(s) found")
