"""nonstop.cli.term writes exactly what rich writes, on a pipe and on a real terminal (a pty),
and draws the common lines and tables itself (without loading rich)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from typing import Any

import pytest
from rich.console import Console as RichConsole
from rich.table import Table as RichTable

from nonstop.cli.term import Console, Table

LONG = "a line longer than the terminal " * 8
# (case, drawn by nonstop.cli.term itself on a pipe, ... on a terminal); otherwise by rich
TEXTS: list[tuple[dict[str, Any], bool, bool]] = [
    ({"text": "[bold]shop[/] agent pid 12 · router caddy on 127.0.0.1:8080 (up)"}, True, True),
    ({"text": "[bold]shop[/] agent pid 12 · router haproxy ([red]down[/])"}, True, True),
    ({"text": "[red]degraded: the router does not answer[/] (since 12:30:45)"}, True, True),
    ({"text": "active release: [bold]v1[/]  previous: -  weights: {'v1': 100}"}, True, True),
    ({"text": "12:30:45 [default]switched all traffic to v2[/]"}, True, True),
    ({"text": "[yellow]agent restarting, reconnecting...[/]"}, True, True),
    ({"text": "[dim]phase check · weights equal · 2 ready[/]"}, True, True),
    ({"text": "[green]v2 deployed[/] in 3.2s"}, True, True),
    ({"text": "[bold]a[red]b[/]c[/] [bold red]d[/] [red]e[/red] [italic dim]f[/]"}, True, True),
    ({"text": "[bold]a[red]b[/bold]c[/]"}, True, True),
    ({"text": "unclosed [bold]tail"}, True, True),
    ({"text": "trailing spaces  "}, True, True),
    ({"text": ""}, True, True),
    ({"text": "Latin-1 é ü ñ and ×"}, True, True),
    ({"text": "a time 12:30:45 and :30: are not emoji"}, True, True),
    ({"text": "[bold]literal[/]", "markup": False}, True, True),
    ({"text": "two\nlines"}, True, False),
    ({"text": LONG}, True, False),
    ({"text": "12:30:45 [red]v2 failed: [rename-column] x[/]"}, False, False),
    ({"text": "emoji :100: and :thumbs_up:"}, False, False),
    ({"text": "wide 日本語 and 😀"}, False, False),
    ({"text": "tab\there"}, False, False),
    ({"text": "escaped \\[bold] not a tag"}, False, False),
    ({"text": "[underline blue]other styles[/] [on red]x[/]"}, False, False),
]
INSTANCES = ["instance", "release", "state", "address", "pid", "restarts"]
TABLES: list[tuple[dict[str, Any], bool, bool]] = [
    (
        {
            "headers": INSTANCES,
            "rows": [
                ["v1-1", "v1", "ready", "127.0.0.1:41235", "6279", "0"],
                ["v2-10", "v2", "starting", "-", "-", "12"],
            ],
        },
        True,
        True,
    ),
    ({"headers": INSTANCES, "rows": []}, True, True),
    ({"headers": ["id", "reason"], "rows": [["1", ""], ["22", "é " * 10]]}, True, True),
    ({"headers": ["id", "reason"], "rows": [["1", "x" * 300]]}, True, False),
    ({"headers": ["id", "reason"], "rows": [["1", "[bold]marked[/]"]]}, False, False),
    ({"headers": ["id", "reason"], "rows": [["1", "日本"]]}, False, False),
]
CASES = [(c, pipe, tty) for c, pipe, tty in TEXTS + TABLES]


def show(console: Any, case: dict[str, Any], table_class: Any) -> None:
    if "headers" in case:
        table = table_class(*case["headers"])
        for row in case["rows"]:
            table.add_row(*row)
        console.print(table)
    else:
        console.print(case["text"], markup=case.get("markup"))


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("case", "light", "_tty"), CASES, ids=range(len(CASES)))
def test_a_pipe_gets_riches_bytes(
    case: dict[str, Any], light: bool, _tty: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = io.StringIO()
    monkeypatch.setattr(sys, "stdout", ours)
    console = Console()
    show(console, case, Table)
    theirs = io.StringIO()
    show(RichConsole(file=theirs, highlight=False, soft_wrap=True, width=4096), case, RichTable)
    assert ours.getvalue() == theirs.getvalue()
    assert (console._rich is None) == light


CHILD = """
import json, sys
from rich.console import Console as RichConsole
from rich.table import Table as RichTable
from nonstop.cli.term import Console, Table
sys.path.insert(0, {tests!r})
from cli.test_term import show
for case in json.loads(sys.argv[1]):
    console = Console()
    show(console, case, Table)
    print("\\x1e" + ("light" if console._rich is None else "rich"))
    show(RichConsole(highlight=False), case, RichTable)
    print("\\x1e")
"""


def run_in_a_terminal(cases: list[dict[str, Any]], columns: int) -> str:
    """The child's output on a pty of ``columns`` columns (stdin, stdout and stderr)."""
    import fcntl
    import termios

    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS")
    }
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(tests=tests), json.dumps(cases)],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**env, "TERM": "xterm-256color"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert child.wait(60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode()


def test_a_terminal_gets_riches_bytes() -> None:
    output = run_in_a_terminal([c for c, _, _ in CASES], columns=100)
    pieces = output.split("\x1e")
    assert len(pieces) == 2 * len(CASES) + 1, output
    for index, (case, _pipe, light) in enumerate(CASES):
        ours, marker_and_theirs = pieces[2 * index], pieces[2 * index + 1]
        marker, _, theirs = marker_and_theirs.partition("\r\n")
        if index:
            ours = ours.partition("\r\n")[2]  # the end of the previous marker line
        assert ours == theirs, (index, case)
        assert marker == ("light" if light else "rich"), (index, case)
    assert "\x1b[1m" in output  # colours on: the comparison covers the ANSI codes
