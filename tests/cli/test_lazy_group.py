"""LazyGroup: the short help kept in each table is the command's own, `--help` reads exactly as
click writes it for the loaded commands, and listing imports no command module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nonstop.cli import main, migrate_entry
from nonstop.cli.lazy import LazyGroup, LazyTable, load

TABLES = {
    "nonstop": (main.cli, main.COMMANDS),
    "nonstop migrate": (migrate_entry.migrate, migrate_entry.COMMANDS),
}


def eager(group: click.Group, table: LazyTable) -> click.Group:
    """The same group with every command loaded, as click lists them without a table."""
    copy = click.Group(group.name, help=group.help, context_settings=group.context_settings)
    copy.params = group.params
    for name, (target, _) in table.items():
        copy.add_command(load(target), name)
    return copy


@pytest.mark.parametrize("where", TABLES)
def test_the_table_holds_each_commands_own_short_help(where: str) -> None:
    _, table = TABLES[where]
    for name, (target, short) in table.items():
        real = load(target).get_short_help_str(limit=10_000)
        assert short == real, f"{where} {name}: update its line in the table to {real!r}"


def eager_cli() -> click.Group:
    top = eager(main.cli, main.COMMANDS)
    top.add_command(eager(migrate_entry.migrate, migrate_entry.COMMANDS), "migrate")
    return top


@pytest.mark.parametrize("args", [["--help"], ["migrate", "--help"]], ids=" ".join)
@pytest.mark.parametrize("width", [40, 80, 200])
def test_help_reads_as_click_writes_it(args: list[str], width: int) -> None:
    lazy = CliRunner().invoke(main.cli, args, terminal_width=width)
    full = CliRunner().invoke(eager_cli(), args, terminal_width=width)
    assert lazy.exit_code == full.exit_code == 0
    assert lazy.output == full.output
    assert "-h, --help" in lazy.output


@pytest.fixture
def broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A command module that fails when imported (a stand-in for an expensive one)."""
    (tmp_path / "nonstop_lazy_probe.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "nonstop_lazy_probe"
    sys.modules.pop("nonstop_lazy_probe", None)


def probe_group(module: str) -> click.Group:
    table = {
        "heavy": (f"{module}:heavy", "Does something costly to import."),
        "version": ("nonstop.cli.lazy:load", "Not a command."),
    }

    @click.group(cls=LazyGroup, lazy=table)
    def group() -> None:
        """A group."""

    @group.command()
    def here() -> None:
        """Registered the usual way."""

    return group


def test_listing_imports_no_command_module(broken_module: str) -> None:
    result = CliRunner().invoke(probe_group(broken_module), ["--help"])
    assert result.exit_code == 0, result.output
    assert "heavy    Does something costly to import." in result.output
    assert "here     Registered the usual way." in result.output
    assert broken_module not in sys.modules


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["heavy"], 1, "imported"),  # the command's module is imported when it runs
        (["version"], 1, "nonstop.cli.lazy:load is not a click command"),
        (["nope"], 2, "No such command 'nope'."),
        (["here"], 0, ""),
    ],
)
def test_running_a_command_imports_it(
    broken_module: str, args: list[str], code: int, expected: str
) -> None:
    result = CliRunner().invoke(probe_group(broken_module), args)
    assert result.exit_code == code
    assert expected in (result.output + str(result.exception or ""))
