"""Terminal output for the CLI without importing rich for plain lines and simple tables.

rich costs 50-90 ms to import, more than all the work of ``nonstop status``. :class:`Console`
is the part of ``rich.console.Console`` the commands use (``print`` of markup strings,
``is_terminal``; anything else is passed to rich), and :class:`Table` the part of
``rich.table.Table`` (headers, ``add_row``). Both write the very bytes rich writes: the same
markup, the same heavy-head box, the same ANSI codes on a terminal, whenever that is certain,
and hand the rest to rich itself, loaded then:

- objects other than strings and :class:`Table`, and keyword arguments other than ``markup``;
- markup other than ``[bold]``, ``[dim]``, ``[italic]`` and the eight basic colours (e.g. a
  message that holds ``[rename-column]``, which rich reads as a tag), escaped brackets, and
  ``:name:`` codes rich may turn into emoji;
- characters whose width is not one cell (controls, combining marks, CJK, emoji);
- on a terminal: text at least as wide as the terminal (rich wraps it), ``NO_COLOR``,
  ``COLUMNS``, ``TERM=dumb``, or ``FORCE_COLOR`` / ``TTY_COMPATIBLE`` (rich decides then).

tests/cli/test_term.py compares the output with rich's for each kind of line and table the
commands print, on a pipe and on a terminal (decision 0440).
"""

from __future__ import annotations

import os
import re
import sys
from typing import IO, Any

_TAG = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")  # rich.markup.RE_TAGS
_EMOJI = re.compile(r"(:(\S*?)(?:(?:\-)(emoji|text))?:)")  # rich._emoji_replace
_NUMERIC_EMOJI = frozenset({"100", "1234"})  # the emoji names rich knows made of digits only
_ATTRIBUTES = {"bold": "1", "dim": "2", "italic": "3"}  # in rich's order of SGR codes
_COLORS = {
    "default": "39",
    **{
        name: str(30 + n)
        for n, name in enumerate(("black", "red", "green", "yellow", "blue", "magenta", "cyan"))
    },
    "white": "37",
}
_WIDTH_ONE = re.compile(r"[\x20-\x7e\xa0-\u02ff]*")
"""Characters rich counts as one cell each (printable ASCII and Latin up to U+02FF)."""
_PIPE_WIDTH = 4096
"""Width rich is given for a pipe or a file (soft wrap: lines are never broken)."""
_HEADER = "\x1b[1m"
_RESET = "\x1b[0m"

Segment = tuple[str, str]
"""Text and the SGR codes of its style ("" for none)."""


class Table:
    """A table with a header row, drawn as rich draws ``rich.table.Table(*headers)``."""

    def __init__(self, *headers: str) -> None:
        self.headers = headers
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def widths(self) -> list[int]:
        return [
            max(len(row[i]) for row in (self.headers, *self.rows)) for i in range(len(self.headers))
        ]

    def lines(self, color: bool) -> list[str]:
        """The table's lines (``color``: the header bold, as rich's ``table.header`` style)."""
        widths = self.widths()
        rule = ["━" * (w + 2) for w in widths]
        style = (_HEADER, _RESET) if color else ("", "")
        return [
            "┏" + "┳".join(rule) + "┓",
            _row(self.headers, widths, "┃", *style),
            "┡" + "╇".join(rule) + "┩",
            *(_row(row, widths, "│") for row in self.rows),
            "└" + "┴".join("─" * (w + 2) for w in widths) + "┘",
        ]

    def cells(self) -> list[str]:
        return [cell for row in (self.headers, *self.rows) for cell in row]

    def to_rich(self) -> Any:
        from rich.table import Table as RichTable

        table = RichTable(*self.headers)
        for row in self.rows:
            table.add_row(*row)
        return table


def _row(cells: tuple[str, ...], widths: list[int], bar: str, on: str = "", off: str = "") -> str:
    """One row: each cell padded to its column, one space each side; ``on``/``off`` wrap the
    padding and the text separately, as rich writes a styled cell."""
    padded = (
        f"{on} {off}{on}{cell.ljust(width)}{off}{on} {off}"
        for cell, width in zip(cells, widths, strict=True)
    )
    return bar + bar.join(padded) + bar


class Console:
    """``rich.console.Console(stderr=..., highlight=False)`` for the CLI: soft wrap and no width
    limit on a pipe, the terminal's width on a terminal; rich only when needed."""

    def __init__(self, *, stderr: bool = False) -> None:
        self.stderr = stderr
        self._rich: Any = None

    @property
    def file(self) -> IO[str]:
        """The stream at the time of writing (tests swap sys.stdout, as rich allows)."""
        return sys.stderr if self.stderr else sys.stdout

    @property
    def is_terminal(self) -> bool:
        """What rich's ``Console.is_terminal`` answers."""
        forced = os.environ.get("TTY_COMPATIBLE", "")
        if forced in ("0", "1"):
            return forced == "1"
        if "FORCE_COLOR" in os.environ:
            return os.environ["FORCE_COLOR"] != ""
        return _isatty(self.file)

    def print(self, *objects: Any, markup: bool | None = None, **options: Any) -> None:
        lines = None if options else self._render(objects, markup is not False)
        if lines is None:
            self.rich().print(*(_richer(o) for o in objects), markup=markup, **options)
            return
        self.file.write("".join(line + "\n" for line in lines))
        self.file.flush()

    def rich(self) -> Any:
        """The rich console that prints what this one does not."""
        if self._rich is None:
            from rich.console import Console as RichConsole

            if self.is_terminal:
                self._rich = RichConsole(stderr=self.stderr, highlight=False)
            else:
                self._rich = RichConsole(
                    stderr=self.stderr, highlight=False, soft_wrap=True, width=_PIPE_WIDTH
                )
        return self._rich

    def __getattr__(self, name: str) -> Any:
        """Any other part of rich's Console (``print_json``, ``status``...) is rich's."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.rich(), name)

    def _render(self, objects: tuple[Any, ...], markup: bool) -> list[str] | None:
        """The lines rich would write, or None when that is not certain."""
        color = self._light_terminal()
        if color is None:
            return None
        width = _terminal_width() if color else _PIPE_WIDTH
        if len(objects) == 1 and isinstance(objects[0], Table):
            return _table_lines(objects[0], color, width)
        if not all(isinstance(o, str) for o in objects):
            return None
        return _text_lines(" ".join(objects), markup, color, width)

    def _light_terminal(self) -> bool | None:
        """False: a pipe or a file; True: a terminal we can write for; None: ask rich."""
        env = os.environ
        if "TTY_COMPATIBLE" in env or "FORCE_COLOR" in env:
            return None
        if not _isatty(self.file):
            return False if _utf(self.file) else None
        if "NO_COLOR" in env or "COLUMNS" in env or not _utf(self.file):
            return None
        if env.get("TERM", "").strip().lower() in ("dumb", "unknown"):
            return None
        return True if _terminal_width() else None


def _table_lines(table: Table, color: bool, width: int) -> list[str] | None:
    if not all(_plain(cell) for cell in table.cells()):
        return None
    if sum(table.widths()) + 3 * len(table.headers) + 1 >= width:
        return None  # rich would shrink and wrap the columns
    return table.lines(color)


def _text_lines(text: str, markup: bool, color: bool, width: int) -> list[str] | None:
    segments = parse_markup(text) if markup else [(text, "")]
    if segments is None or _emoji_codes(text):
        return None
    plain = "".join(t for t, _ in segments)
    if color and "\n" in plain:
        return None
    if not all(_WIDTH_ONE.fullmatch(line) for line in plain.split("\n")):
        return None
    if color and len(plain) >= width:
        return None
    if not color:
        return plain.split("\n")
    return ["".join(f"\x1b[{codes}m{t}{_RESET}" if codes else t for t, codes in segments)]


def parse_markup(text: str) -> list[Segment] | None:
    """``text``'s rich markup as (text, SGR codes) pieces; None for markup this module does
    not render (rich does then), or that rich refuses (rich raises its error then)."""
    segments: list[Segment] = []
    stack: list[str] = []
    pos = 0
    for match in _TAG.finditer(text):
        escapes, tag = match.group(2), " ".join(match.group(3).split())
        segments.append((text[pos : match.start()], _codes(stack)))
        if escapes or not _apply_tag(tag, stack):
            return None
        pos = match.end()
    segments.append((text[pos:], _codes(stack)))
    return [s for s in segments if s[0]]


def _apply_tag(tag: str, stack: list[str]) -> bool:
    """Open or close ``tag`` on ``stack``; False when it is not one we render."""
    if tag.startswith("/"):
        name = tag[1:].strip()
        if not stack or (name and name not in stack):
            return False
        stack.pop(len(stack) - 1 - stack[::-1].index(name) if name else -1)
        return True
    words = tag.split()
    if not words or any(w not in _ATTRIBUTES and w not in _COLORS for w in words):
        return False
    stack.append(tag)
    return True


def _codes(stack: list[str]) -> str:
    words = [w for tag in stack for w in tag.split()]
    codes = [code for name, code in _ATTRIBUTES.items() if name in words]
    colors = [_COLORS[w] for w in words if w in _COLORS]
    return ";".join(codes + colors[-1:])


def _emoji_codes(text: str) -> bool:
    """True when rich may replace a ``:name:`` in ``text`` with an emoji."""
    for match in _EMOJI.finditer(text):
        name = match.group(2).lower()
        if not name.isdigit() or name in _NUMERIC_EMOJI:
            return True
    return False


def _plain(cell: str) -> bool:
    return bool(_WIDTH_ONE.fullmatch(cell)) and not _TAG.search(cell) and not _emoji_codes(cell)


def _richer(obj: Any) -> Any:
    return obj.to_rich() if isinstance(obj, Table) else obj


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream: rich says False
        return False


def _utf(stream: IO[str]) -> bool:
    return (getattr(stream, "encoding", None) or "utf-8").lower().startswith("utf")


def _terminal_width() -> int:
    """The terminal's columns as rich reads them (stdin, stdout, stderr), 0 when unknown."""
    for fd in (0, 1, 2):
        try:
            return os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
    return 0
