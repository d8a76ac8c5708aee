"""`nonstop verify` end to end: the real CLI entry against real servers and real commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from loadgen_servers import App, ThreadedServer

from nonstop.cli.main import main
from nonstop.cli.verify import CommandResult, VerifyResult
from nonstop.loadgen import Outcome, Recorder

PYTHON = sys.executable
NONSTOP = str(Path(sys.executable).parent / "nonstop")  # the installed entry point


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["verify", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return int(info.value.code or 0), out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_cli(capsys, "--json", *args)
    return code, json.loads(out)


def test_duration_run_passes_with_json(capsys: pytest.CaptureFixture[str], server: ThreadedServer):
    code, report = run_json(capsys, "--url", f"{server.url}/", "--rps", "50", "--duration", "0.4s")
    assert code == 0
    assert report["scheduled"] == report["ok"] == report["counts"]["ok"] == 20
    assert report["passed"] is True
    assert report["exit_code"] == 0
    assert report["command"] is None
    assert report["verdict"] == "PASS: all 20 requests ok"
    assert set(report["latency_ms"]) == {"from_scheduled", "from_sent"}
    assert {"p50", "p99", "max"} <= set(report["latency_ms"]["from_scheduled"])


def test_failed_requests_exit_1(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, report = run_json(
        capsys, "--url", f"{server.url}/every/2/503", "--rps", "50", "--duration", "0.4"
    )
    assert code == 1
    assert report["counts"]["5xx"] == 10
    assert report["verdict"] == "FAIL: 10 of 20 requests not ok (5xx 10)"


def test_human_output_with_timeline_and_groups(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    code, out, _ = run_cli(
        capsys,
        "--url",
        f"{server.url}/",
        "--rps",
        "20",
        "--duration",
        "1.5s",
        "--timeline",
        "--group-by-header",
        "X-Release",
    )
    assert code == 0
    assert "PASS: all 30 requests ok" in out
    assert "groups: v1 30" in out
    assert "from scheduled" in out
    # second │ ok │ groups: 1.5 s at 20 rps is 20 requests in second 0 and 10 in second 1
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert [(row[0], row[2], row[4:]) for row in rows] == [
        ("0", "20", ["v1", "20"]),
        ("1", "10", ["v1", "10"]),
    ]


def test_runs_while_the_command_runs_and_reports_its_exit(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    code, report = run_json(
        capsys,
        "--url",
        f"{server.url}/",
        "--rps",
        "40",
        "--",
        PYTHON,
        "-c",
        "import time; time.sleep(0.5); print('deployed')",
    )
    assert code == 0
    assert report["command"]["exit_code"] == 0
    assert report["passed"] is True
    # the load stopped when the command did (no --duration was given)
    assert report["duration"] <= report["command"]["seconds"] + 0.5
    assert report["scheduled"] > 0


def test_a_failing_command_is_reported(capsys: pytest.CaptureFixture[str], server: ThreadedServer):
    args = ("--url", f"{server.url}/", "--rps", "40", "--warmup", "0.2s", "--", PYTHON, "-c")
    code, report = run_json(capsys, *args, "import sys; sys.exit(5)")
    assert code == 3
    assert report["command"]["exit_code"] == 5
    assert report["command"]["status"] == "exit 5"
    assert report["passed"] is True
    assert report["warmup"]["ok"] == 8
    assert report["verdict"].startswith("FAIL: the command failed (exit 5); requests PASS")

    code, report = run_json(
        capsys,
        "--url",
        f"{server.url}/status/500",
        "--rps",
        "40",
        "--",
        PYTHON,
        "-c",
        "import time, sys; time.sleep(0.2); sys.exit(7)",
    )
    assert code == 4
    assert report["command"]["exit_code"] == 7
    assert report["counts"]["5xx"] == report["scheduled"] > 0


def test_tail_keeps_load_after_the_command(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    code, report = run_json(
        capsys, "--url", f"{server.url}/", "--rps", "20", "--tail", "0.5s", "--", PYTHON, "-V"
    )
    assert code == 0
    assert report["scheduled"] >= 10  # 0.5 s of tail at 20 rps, whatever the command took


def test_url_defaults_to_the_router_in_nonstop_toml(
    capsys: pytest.CaptureFixture[str],
    server: ThreadedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "nonstop.toml").write_text(
        '[app]\nname = "web"\ncommand = "python3 app.py --port {port}"\n'
        f'[router]\nlisten = "0.0.0.0:{server.port}"\n'
    )
    monkeypatch.chdir(tmp_path)
    code, report = run_json(capsys, "--rps", "20", "--duration", "0.2")
    assert code == 0
    assert report["url"] == f"http://127.0.0.1:{server.port}/"


def test_bad_nonstop_toml_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "nonstop.toml").write_text(
        '[app]\nname = "web"\ncommand = "x {port}"\n[router]\nlisten = "nope"\n'
    )
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "--duration", "1")
    assert code == 2
    assert 'router.listen: expected "host:port"' in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--rps", "0", "--duration", "1"],
            "Invalid value for '--rps': expected a number > 0, got 0",
        ),
        (["--rps", "-3", "--duration", "1"], "Invalid value for '--rps': expected a number > 0"),
        (["--rps", "fast", "--duration", "1"], "Invalid value for '--rps'"),
        (["--duration", "1x"], "Invalid value for '--duration': expected a duration such as 30"),
        (["--duration", "0"], "Invalid value for '--duration': expected a duration > 0"),
        (["--duration", "-2s"], "Invalid value for '--duration'"),
        (["--duration", "1", "--timeout", "0s"], "Invalid value for '--timeout'"),
        (["--duration", "1", "--connections", "0"], "Invalid value for '--connections'"),
        (["--duration", "1", "--url", "nope"], "error: --url: expected an http:// or https:// URL"),
        (["--duration", "1", "--url", "http://h:70000/"], "Port out of range"),
        (["--duration", "1", "--header", "oops"], 'error: --header: expected "Name: value"'),
        (["--duration", "1", "--expect-status", "2xx"], "error: --expect-status: expected"),
        ([], "error: give --duration (e.g. --duration 30s) or a command after --"),
        (["--duration", "1", "--", "true"], "error: give either --duration or a command after --"),
        (["--", "no-such-command-here"], "error: command not found: no-such-command-here"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], refused_url: str, args: list[str], message: str
) -> None:
    has_url = "--url" in args
    code, _, err = run_cli(capsys, *([] if has_url else ["--url", refused_url]), *args)
    assert code == 2
    assert message in err


def test_no_url_and_no_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "--duration", "1")
    assert code == 2
    assert "error: give --url: there is no nonstop.toml here to read router.listen from" in err


def test_interrupt_prints_the_report_and_exits_130(server: ThreadedServer, app: App) -> None:
    process = subprocess.Popen(
        [NONSTOP, "verify", "--json", "--url", f"{server.url}/", "--rps", "20", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while app.hits < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # requests arriving: the signal handlers are installed
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    report = json.loads(out)
    assert report["interrupted"] is True
    assert report["verdict"].startswith("INTERRUPTED")
    assert report["scheduled"] == sum(report["counts"].values()) > 0


def _report(ok: int, failed: int) -> Any:
    recorder = Recorder()
    for _ in range(ok):
        recorder.record(Outcome.OK, 0, since_scheduled=0.001, since_sent=0.001, status=200)
    for _ in range(failed):
        recorder.record(Outcome.SERVER_ERROR, 0, since_scheduled=0.001, since_sent=0.001)
    return recorder.report(url="http://x/", method="GET", rps=1, duration=1)


@pytest.mark.parametrize(
    ("ok", "failed", "command_exit", "interrupted", "exit_code"),
    [
        (10, 0, None, False, 0),  # duration run, all ok
        (10, 0, 0, False, 0),  # command ok, all ok
        (9, 1, None, False, 1),  # a request failed
        (0, 0, None, False, 1),  # nothing scheduled: nothing proven
        (9, 1, 0, False, 1),
        (10, 0, 5, False, 3),  # the command failed, requests fine
        (10, 0, -15, False, 3),  # the command was killed by SIGTERM
        (9, 1, 5, False, 4),  # both
        (10, 0, None, True, 130),
    ],
)
def test_exit_codes(
    ok: int, failed: int, command_exit: int | None, interrupted: bool, exit_code: int
) -> None:
    command = None
    if command_exit is not None:
        command = CommandResult(argv=("deploy",), exit_code=command_exit, seconds=1.0)
    result = VerifyResult(report=_report(ok, failed), command=command, interrupted=interrupted)
    assert result.exit_code == exit_code
    assert result.to_dict()["exit_code"] == exit_code


def test_killed_command_is_described() -> None:
    assert CommandResult(argv=("x",), exit_code=-15, seconds=0).describe() == "killed by SIGTERM"
