"""Parse a large migration in pieces on a second thread while the rules read the pieces before.

libpg_query parses with the GIL released (pglast's ``parse_sql_json`` runs ``pg_query_parse``
in a ``nogil`` block, and keeps its state thread-local), and parsing is about a third of the
linter's work on a large file. So the file is cut after statements into pieces that grow by
half (64 KiB, 96 KiB, 144 KiB, ...): the first is parsed at once, and while the rules read
piece k the other thread parses piece k+1, half as long again. The parser takes ~6 us per
statement and the linter's Python ~9 us (benchmark corpus, decision 0590), so piece k+1 is
parsed about when the rules are done with piece k. Pieces that doubled (before 0590, when the
rules took ~19 us) now kept the rules waiting for the parser: 40 ms of a 0.2 s lint, against
15 ms with this growth (waits in ``future.result``, median of 7, load 0.3). A 20,000-statement
file then costs about the rules' time plus the first piece's parse.

Where a piece is cut: after a ``;`` that ends a line and is followed by a line that starts
with a statement keyword at column 0 (``ALTER``, ``CREATE``, ``UPDATE``, ...). Such a place can
still sit inside a function body or a string; then the piece before it does not parse (an
unterminated dollar quote, comment, string or BEGIN ATOMIC), because a prefix of the file that
the parser accepts ends where the whole file's parse ends a statement: the parser reads left
to right with one token of look-ahead, so up to that ``;`` both parses are the same. The
caller then lints the file in one piece (``BadCut``).

Each piece is parsed with as many spaces before it as the bytes of the file before it, so every
position in its tree (``stmt_location``, a node's ``location``) is the position in the file,
as with a single parse; lexing those spaces costs ~1 ms per MB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pglast import parser as pg

from nonstop.migrate.lint.source import Source

FIRST_PIECE = 65_536  # characters; files up to twice this are parsed in one piece
_CUT = re.compile(
    r";[ \t]*\r?\n(?=(?:alter|create|drop|update|insert|delete|select|set|comment|grant|revoke"
    r"|truncate|reindex|vacuum|cluster|refresh|lock|with)\b)",
    re.I,
)


class BadCut(Exception):
    """A piece does not parse on its own: lint the file in one piece."""


def cuts(text: str, first: int | None = None) -> list[int]:
    """Character offsets where pieces start: ``[0]`` for a file of one piece.

    Worked example, first=10: ``"SET a=1;\\nUPDATE t SET x=1;\\nUPDATE t SET y=2;\\n"`` is cut
    after the first ``;\\n`` found at or after offset 10 (the one at 27): ``[0, 27]``; the next
    piece would need 15 more characters after 27, and the only ``;\\n`` after 42 ends the file,
    so that is all."""
    starts, size, at = [0], first or FIRST_PIECE, 0
    while True:
        found = _CUT.search(text, at + size)
        if found is None or len(text) - found.end() < size:
            return starts
        at = found.end()
        starts.append(at)
        size += size // 2


def _parse(source: Source, start: int, end: int) -> str:
    """The JSON tree of ``source.text[start:end]``, positions counted from the file's start."""
    text = source.text[start:end]
    if start:
        text = " " * source.byte_offset(start) + text
    try:
        return pg.parse_sql_json(text)
    except pg.ParseError as exc:
        raise BadCut(str(exc)) from None


def parsed_pieces(source: Source, starts: list[int]) -> Iterator[str]:
    """The JSON tree of each piece, in order; the next piece parses on a worker thread while
    the caller reads this one. BadCut when a piece does not parse on its own."""
    from concurrent.futures import ThreadPoolExecutor  # only for large files

    bounds = list(zip(starts, [*starts[1:], len(source.text)], strict=True))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nonstop-parse") as pool:
        futures = [pool.submit(_parse, source, a, b) for a, b in bounds[1:]]
        try:
            yield _parse(source, *bounds[0])
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
