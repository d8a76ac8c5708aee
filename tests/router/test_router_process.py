"""Recognising our router process, its files and socket paths (real /proc, real files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nonstop.drivers.router.caddy_process import find_caddy, last_error
from nonstop.drivers.router.process import (
    UNIX_PATH_MAX,
    ProcessRecord,
    check_socket_path,
    rotate,
    socket_dir,
    start_time,
)
from nonstop.errors import RouterError


def test_our_own_process_is_recognised_and_a_recycled_pid_is_not(tmp_path: Path) -> None:
    ticks = start_time(os.getpid())
    assert ticks is not None
    assert ticks.isdigit()
    record = ProcessRecord(os.getpid(), ticks)
    record.save(tmp_path / "caddy.pid")
    assert ProcessRecord.load(tmp_path / "caddy.pid") == record
    assert record.running()
    assert not ProcessRecord(os.getpid(), str(int(ticks) + 1)).running()  # same pid, other process


def test_an_exited_process_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert start_time(child.pid) is None


@pytest.mark.parametrize("text", ["", "{", '{"pid": "x"}', '{"start_time": "1"}', "[]"])
def test_a_broken_pid_file_is_no_record(tmp_path: Path, text: str) -> None:
    (tmp_path / "caddy.pid").write_text(text)
    assert ProcessRecord.load(tmp_path / "caddy.pid") is None
    assert ProcessRecord.load(tmp_path / "missing.pid") is None


def test_rotate_keeps_one_generation(tmp_path: Path) -> None:
    log = tmp_path / "caddy.log"
    rotate(log, limit=10)  # no log yet: nothing to do
    log.write_text("x" * 11)
    rotate(log, limit=10)
    assert not log.exists()
    assert (tmp_path / "caddy.log.1").read_text() == "x" * 11
    log.write_text("small")
    rotate(log, limit=10)
    assert log.read_text() == "small"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [
                '{"level":"info","msg":"using config from file"}',
                '{"level":"error","msg":"loading initial config: bind: address already in use"}',
                '{"level":"info","msg":"exiting"}',
            ],
            "loading initial config: bind: address already in use",
        ),
        (["plain text from a crash"], "plain text from a crash"),
        ([], "(empty log)"),
    ],
)
def test_last_error_reads_caddys_json_log(tmp_path: Path, lines: list[str], expected: str) -> None:
    log = tmp_path / "caddy.log"
    log.write_text("".join(line + "\n" for line in lines))
    assert last_error(log) == expected


def test_socket_paths_too_long_or_with_a_bar_are_refused() -> None:
    with pytest.raises(RouterError, match=r"is 108 bytes, longer than the 107 Linux allows"):
        check_socket_path(Path("/" + "s" * (UNIX_PATH_MAX)))
    with pytest.raises(RouterError, match=r"contains '\|'"):
        check_socket_path(Path("/tmp/a|b/caddy-admin.sock"))


def test_a_short_state_dir_keeps_its_sockets() -> None:
    short = Path("/tmp/x")
    assert socket_dir(short) == short


def test_a_missing_explicit_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RouterError, match="caddy binary not found"):
        find_caddy(tmp_path / "no-caddy")
