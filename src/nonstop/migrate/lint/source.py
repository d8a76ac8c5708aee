"""Positions in a migration file: byte offsets from the parser -> 1-based line and column.

libpg_query reports ``stmt_location`` and node ``location`` as byte offsets into the UTF-8
encoded text. Editors and GitHub count columns in characters, so a column is the number of
characters (not bytes) before the offset on its line, plus one: in ``SELECT 'é', x`` the ``x``
sits at byte 13 but column 13 (``é`` is two bytes, one character).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence, Sized
from itertools import accumulate


class Source:
    """A file's text with its line starts, for mapping byte or character offsets to line/col."""

    __slots__ = ("_ascii", "_byte_starts", "_char_starts", "data", "path", "text")

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.data = text.encode("utf-8")
        self._ascii = len(self.data) == len(text)  # then a byte offset is a character offset
        self._byte_starts: list[int] | None = None
        self._char_starts: list[int] | None = None

    def _bytes_index(self) -> list[int]:
        if self._byte_starts is None:
            self._byte_starts = _line_starts(self.data.split(b"\n"))
        return self._byte_starts

    def _chars_index(self) -> list[int]:
        if self._char_starts is None:
            self._char_starts = _line_starts(self.text.split("\n"))
        return self._char_starts

    def byte_offset(self, char_offset: int) -> int:
        """The byte offset in ``data`` of a character offset in ``text``."""
        if self._ascii:
            return char_offset
        return len(self.text[:char_offset].encode("utf-8"))

    def byte_position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column in characters) of a byte offset."""
        starts = self._bytes_index()
        offset = max(0, min(offset, len(self.data)))
        index = bisect_right(starts, offset) - 1
        if self._ascii:
            return index + 1, offset - starts[index] + 1
        column = len(self.data[starts[index] : offset].decode("utf-8", errors="replace")) + 1
        return index + 1, column

    def char_position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        starts = self._chars_index()
        offset = max(0, min(offset, len(self.text)))
        index = bisect_right(starts, offset) - 1
        return index + 1, offset - starts[index] + 1

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its newline."""
        starts = self._chars_index()
        if not 1 <= line <= len(starts):
            return ""
        end = starts[line] - 1 if line < len(starts) else len(self.text)
        return self.text[starts[line - 1] : end].rstrip("\r")


def _line_starts(lines: Sequence[Sized]) -> list[int]:
    """Offsets where each line starts, from the lines split at ``\n`` (split and sum run in C:
    a 20,000-line file in ~2 ms, against ~8 ms for a loop of ``find``)."""
    return [0, *accumulate(map((1).__add__, map(len, lines[:-1])))]
