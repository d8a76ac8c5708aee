"""Inputs lint (and the runner) refuse before parsing: NUL bytes, what is not a regular file,
files over the size limit. Each refusal names the file, exits 2 and never hangs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from nonstop.cli.migrate_lint import lint
from nonstop.errors import UsageError
from nonstop.migrate.errors import MigrationSourceError
from nonstop.migrate.lint import lint_text
from nonstop.migrate.source import MAX_FILE_BYTES, load_migration, parse_migration


def _file(content: bytes) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "0001.sql"
        path.write_bytes(content)
        return path

    return make


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "0001.sql"
    os.mkfifo(path)
    return path


def _device(tmp_path: Path) -> Path:
    return Path("/dev/zero")


CASES = [
    (_file(b"SELECT 1;\n-- \x00\nDROP TABLE users;\n"), ":2: contains a NUL byte"),
    (_file(b"\x00"), ":1: contains a NUL byte"),
    (_fifo, "not a regular file"),
    (_device, "not a regular file"),
    (_file(b"-- x\n" * (MAX_FILE_BYTES // 5 + 1)), f"is more than the {MAX_FILE_BYTES} allowed"),
    (_file(b"SELECT '\xff';\n"), "not UTF-8 text"),
]


@pytest.mark.parametrize(("make", "message"), CASES)
def test_lint_refuses_with_exit_2(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    result = CliRunner().invoke(lint, [str(path)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"error: {path}" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(("make", "message"), [c for c in CASES if c[0] is not _device])
def test_the_runner_refuses_the_same_files(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(MigrationSourceError) as caught:
        load_migration(path, tmp_path)
    assert str(caught.value).startswith("0001.sql")
    assert message in str(caught.value)


def test_text_with_nul_is_refused_by_every_entry_point() -> None:
    text = "SELECT 1;\n-- \x00\nDROP TABLE users;\n"
    with pytest.raises(UsageError, match=r"x\.sql:2: contains a NUL byte"):
        lint_text(text, "x.sql")
    with pytest.raises(MigrationSourceError, match=r"x\.sql:2: contains a NUL byte"):
        parse_migration("x.sql", text, phase="expand")


def test_a_file_at_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "0001.sql"
    line = b"SELECT 1;\n"
    path.write_bytes(line * (MAX_FILE_BYTES // len(line)))
    result = CliRunner().invoke(lint, [str(path)], catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
