"""The JSON report is what the stdlib writes for each finding's dict, byte for byte."""

from __future__ import annotations

import json

import pytest

from nonstop.migrate.lint import Finding
from nonstop.migrate.lint.report import to_json

ODD = Finding(
    "rename-column",
    "error",
    'dir/ü".sql',
    3,
    7,
    'renaming "a\tb\\" of "é""x" \u2028 😀',
    "fix: \n new line",
    "ALTER TABLE x",
)


@pytest.mark.parametrize(
    "findings",
    [[], [ODD], [ODD, ODD._replace(replacement=None, severity="warning", line=4)]],
)
def test_same_text_as_the_stdlib_encoder(findings: list[Finding]) -> None:
    encoder = json.JSONEncoder(ensure_ascii=False)
    rows = [encoder.encode(f.as_json()) for f in findings]
    expected = "[\n  " + ",\n  ".join(rows) + "\n]" if rows else "[]"
    assert to_json(findings) == expected
    assert json.loads(to_json(findings)) == [f.as_json() for f in findings]
