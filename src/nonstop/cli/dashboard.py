"""``nonstop dashboard``: a one-time login link to the agent's web dashboard.

The agent makes the link (``POST /v1/dashboard/login``): it works once, for ``[dashboard]
login_ttl`` (2 minutes by default), and sets a session cookie in the browser that follows it.
"""

from __future__ import annotations

import click

from nonstop.cli.common import client, console, err_console, json_option, print_json


@click.command()
@click.option("--open", "open_browser", is_flag=True, help="Open the link in a web browser.")
@json_option
def dashboard(open_browser: bool, as_json: bool) -> None:
    """Print a one-time login link to the web dashboard ([dashboard] listen)."""
    link = client().call("POST", "/v1/dashboard/login")
    if as_json:
        print_json(link)
    else:
        console.print(link["url"], soft_wrap=True, highlight=False)
        err_console.print(
            f"[dim]works once, within {link['expires_in']:g}s; "
            f"the dashboard is at {link['base_url']}[/dim]"
        )
    if open_browser and not _open(link["url"]):
        err_console.print("no web browser found here: open the link above yourself")


def _open(url: str) -> bool:
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False
