"""Large files are parsed in pieces on a second thread: the same findings as one parse, the
same errors at the same place, and a cut that falls inside a statement is detected."""

from __future__ import annotations

import pytest

from nonstop.migrate.lint import LintInputError, lint_text
from nonstop.migrate.lint import pieces as pieces_module
from nonstop.migrate.lint.pieces import cuts

BLOCK = (
    "ALTER TABLE t{i} ADD COLUMN c{i} int NOT NULL;\n"
    "CREATE INDEX i{i} ON t{i} (c{i});\n"
    "UPDATE t{i} SET c{i} = 1 WHERE id < {i};\n"
)
# a function body whose lines look like statements at column 0: a cut may fall inside it
FUNCTION = (
    "CREATE FUNCTION f{i}() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n"
    "PERFORM 1;\nUPDATE t SET a = 1;\nALTER TABLE t ADD COLUMN x int;\nEND;\n$$;\n"
)


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pieces_module, "FIRST_PIECE", 64)


def _corpus(blocks: int, every: int = 0) -> str:
    out = ["SET lock_timeout = '1s';\n"]
    for i in range(blocks):
        out.append(FUNCTION.format(i=i) if every and i % every == 0 else BLOCK.format(i=i))
    return "".join(out)


def test_cuts_worked_example() -> None:
    text = "SET a=1;\nUPDATE t SET x=1;\nUPDATE t SET y=2;\n"
    assert cuts(text, 10) == [0, 27]
    assert cuts(text, 100) == [0]
    assert cuts("  SELECT 1;\n  UPDATE t SET x = 1;\n" * 10, 5) == [0]  # indented: never cut


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("every", [0, 3])
@pytest.mark.parametrize("phase", ["expand", "backfill", "contract"])
def test_pieces_give_the_findings_of_one_parse(every: int, phase: str) -> None:
    text = _corpus(60, every)
    assert len(cuts(text)) > 3
    pieced = lint_text(text, "m.sql", phase=phase)  # type: ignore[arg-type]
    whole = lint_text(text, "m.sql", phase=phase, full_tree=True)  # type: ignore[arg-type]
    assert pieced == whole
    assert pieced  # the corpus has hazards in every phase


@pytest.mark.usefixtures("small_pieces")
def test_a_cut_inside_a_function_body_is_detected() -> None:
    text = _corpus(2) + FUNCTION.format(i=99) * 20 + _corpus(2)
    starts = cuts(text)
    inside = [s for s in starts if text.rfind("$$", 0, s) > text.rfind("$$;", 0, s)]
    assert inside  # the heuristic does cut inside a body here
    assert lint_text(text, "m.sql") == lint_text(text, "m.sql", full_tree=True)


@pytest.mark.usefixtures("small_pieces")
def test_a_syntax_error_in_a_later_piece_is_reported_at_its_place() -> None:
    text = _corpus(40) + "ALTER TABLE t ADD COLUM x int;\n" + _corpus(5)
    line = text[: text.index("ADD COLUM x")].count("\n") + 1
    with pytest.raises(
        LintInputError,
        match=rf'^m.sql:{line}:27: SQL does not parse: syntax error at or near "int"',
    ):
        lint_text(text, "m.sql")


@pytest.mark.usefixtures("small_pieces")
def test_non_ascii_text_keeps_positions() -> None:
    text = _corpus(10).replace("WHERE id <", "WHERE note <> 'é😀' AND id <")
    assert len(cuts(text)) > 2
    assert lint_text(text, "m.sql") == lint_text(text, "m.sql", full_tree=True)
