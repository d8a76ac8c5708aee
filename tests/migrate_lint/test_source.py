"""Byte offsets from the parser -> 1-based line and character column, for any UTF-8 text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonstop.migrate.lint.source import Source

POSITION_CASES = [
    # text, byte offset, (line, column)
    ("SELECT 1;", 0, (1, 1)),
    ("SELECT 1;\nSELECT 2;", 10, (2, 1)),
    ("SELECT 'é', x", 13, (1, 13)),  # é is 2 bytes, 1 character
    ("-- ✓ done\nDROP TABLE t;", 12, (2, 1)),  # ✓ is 3 bytes
    ("a\r\nb", 3, (2, 1)),
    ("", 0, (1, 1)),
]


@pytest.mark.parametrize(("text", "offset", "expected"), POSITION_CASES)
def test_byte_position(text: str, offset: int, expected: tuple[int, int]) -> None:
    assert Source("f.sql", text).byte_position(offset) == expected


@settings(deadline=None, max_examples=100)  # no timing: the machine may be busy
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60), st.data())
def test_byte_and_char_positions_agree(text: str, data: st.DataObject) -> None:
    """Every character's byte offset maps to the same place as its character offset."""
    source = Source("f.sql", text)
    index = data.draw(st.integers(min_value=0, max_value=len(text)))
    byte_offset = len(text[:index].encode("utf-8"))
    line = text[:index].count("\n") + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    assert source.byte_position(byte_offset) == (line, column)
    assert source.char_position(index) == (line, column)


def test_line_text() -> None:
    source = Source("f.sql", "first\r\nsecond\nthird")
    assert [source.line_text(n) for n in (1, 2, 3, 4)] == ["first", "second", "third", ""]
