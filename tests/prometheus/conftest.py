"""Fixtures: a real Prometheus scraping two real sample apps, shared by a module's tests.

``good`` answers every request; ``bad`` fails exactly one request in four (ERROR_RATE 0.25).
Both have served a warm-up request and been scraped before any test runs, so their counter
series exist and ``increase()`` sees every later request.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nonstop_testing import require_binary
from prometheus.promserver import PrometheusServer, free_port


@dataclass
class SampleApp:
    release: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def hit(self, n: int) -> int:
        """Send ``n`` requests to ``/``; return how many were answered 500."""
        failed = 0
        for _ in range(n):
            try:
                with urllib.request.urlopen(f"http://{self.address}/", timeout=5) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                if exc.code != 500:
                    raise
                failed += 1
        return failed


def start_app(release: str, error_rate: float, log: Path) -> SampleApp:
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "nonstop.demo.sampleapp", "--port", str(port)],
            env={"VERSION": release, "ERROR_RATE": str(error_rate), "PATH": "/usr/bin:/bin"},
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    app = SampleApp(release, port, process)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{app.address}/health", timeout=1):
                return app
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"sample app {release} did not start: {log.read_text()[-1000:]}")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    binary = require_binary("prometheus")
    server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def apps(
    prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, SampleApp]]:
    logs = tmp_path_factory.mktemp("apps")
    started = [
        start_app("good", 0.0, logs / "good.log"),
        start_app("bad", 0.25, logs / "bad.log"),
    ]
    try:
        apps = {app.release: app for app in started}
        apps["good"].hit(1)
        apps["bad"].hit(4)  # the fourth request fails: both status series exist from now on
        prometheus.set_targets(app.address for app in started)
        prometheus.wait_targets_up(app.address for app in started)
        prometheus.wait_value('sum(http_requests_total{release="bad"})', 4)
        yield apps
    finally:
        for app in started:
            app.process.kill()
            app.process.wait()
