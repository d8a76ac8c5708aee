"""`nonstop verify --websockets` end to end: the real CLI entry, real sample-app processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nonstop.cli.main import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SampleApp:
    def __init__(self, *flags: str) -> None:
        self.port = _free_port()
        env = {**os.environ, "NONSTOP_RELEASE": "v7", "NONSTOP_INSTANCE": "v7-1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nonstop.demo.sampleapp", "--port", str(self.port), *flags],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not self._answers():
            assert time.monotonic() < deadline, "the sample app did not start"
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def apps() -> Iterator[list[SampleApp]]:
    started: list[SampleApp] = []
    yield started
    for app in started:
        app.stop()


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    with pytest.raises(SystemExit) as info:
        main(["verify", "--json", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return int(info.value.code or 0), json.loads(out)


def test_held_connections_report_the_release_they_ended_on(
    capsys: pytest.CaptureFixture[str], apps: list[SampleApp], tmp_path: Any
) -> None:
    apps.append(app := SampleApp())
    os.chdir(tmp_path)  # no project here: no agent to ask about instances
    code, report = run_json(capsys, "--url", app.url, "--websockets", "5", "--duration", "0.5s")
    ws = report["websockets"]
    assert (code, ws["passed"], ws["clients"], ws["ended_on"]) == (0, True, 5, {"v7": 5})
    assert (ws["closures"], ws["abrupt"], ws["connect_failures"]) == (0, [], {})
    assert "scheduled" not in report  # no --rps: WebSockets only
    assert ws["verdict"] == "PASS: websockets: 0 closure(s), none abrupt; 5 client(s) ended on v7 5"


def test_a_stopping_app_closes_with_1001_and_an_app_killed_ends_abruptly(
    capsys: pytest.CaptureFixture[str], apps: list[SampleApp], tmp_path: Any
) -> None:
    apps.append(graceful := SampleApp())
    apps.append(brutal := SampleApp("--no-graceful"))
    os.chdir(tmp_path)
    # The app exits only once each client answered its close frame: wait for that (it stays a
    # zombie of this test process, so watch its state rather than its pid).
    pid = graceful.process.pid
    stop = f"kill -TERM {pid}; until grep -q '^State:.*Z' /proc/{pid}/status; do sleep 0.05; done"
    code, report = run_json(
        capsys, "--url", graceful.url, "--websockets", "4", "--", "sh", "-c", stop
    )
    ws = report["websockets"]
    assert ws["close_codes"] == {"1001": 4}
    assert ws["abrupt"] == []
    # (a client whose hint was near 0 ms may already have failed to reconnect: no assertion
    # on the exit code here)
    assert code in (0, 1)

    kill = f"kill -TERM {brutal.process.pid}"  # --no-graceful: SIGTERM kills it at once
    code, report = run_json(
        capsys, "--url", brutal.url, "--websockets", "3", "--tail", "1s", "--", "sh", "-c", kill
    )
    ws = report["websockets"]
    assert code == 1
    assert len(ws["abrupt"]) == 3
    assert {c["code"] for c in ws["abrupt"]} == {1006}
    assert {c["instance"] for c in ws["abrupt"]} == {"v7-1"}
    assert ws["verdict"].startswith("FAIL: websockets: 3 connection(s) ended abruptly")


def test_rps_adds_http_load_beside_the_websockets(
    capsys: pytest.CaptureFixture[str], apps: list[SampleApp], tmp_path: Any
) -> None:
    apps.append(app := SampleApp())
    os.chdir(tmp_path)
    args = ("--url", app.url, "--websockets", "2", "--rps", "20", "--duration", "0.5s")
    code, report = run_json(capsys, *args)
    assert (code, report["scheduled"], report["ok"]) == (0, 10, 10)
    assert report["websockets"]["ended_on"] == {"v7": 2}
    assert report["verdict"] == (
        "PASS: all 10 requests ok; PASS: websockets: 0 closure(s), none abrupt; "
        "2 client(s) ended on v7 2"
    )
