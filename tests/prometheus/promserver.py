"""A real Prometheus for tests: temp config and data dir, a free port, file_sd targets.

Targets live in a JSON file (file_sd) that :meth:`PrometheusServer.set_targets` rewrites
atomically; Prometheus watches it (inotify) and scrapes every second.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: app
    file_sd_configs:
      - files: ["{targets}"]
        refresh_interval: 1s
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    def __init__(self, binary: str, root: Path, scrape_configs: str = "") -> None:
        self.binary = binary
        self.scrape_configs = scrape_configs
        """More ``scrape_configs`` entries (YAML list items, indented two spaces)."""
        self.root = root
        self.port = free_port()
        self.targets = root / "targets.json"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.set_targets(())
        config = self.root / "prometheus.yml"
        config.write_text(CONFIG.format(targets=self.targets) + self.scrape_configs)
        log = (self.root / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._wait(lambda: self._get("/-/ready") is not None, timeout, "ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def set_targets(self, addresses: Iterable[str]) -> None:
        """Scrape exactly these ``host:port`` addresses (an atomic rewrite of the file_sd)."""
        groups = [{"targets": sorted(set(addresses)), "labels": {}}]
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, self.targets)

    def wait_targets_up(self, addresses: Iterable[str], timeout: float = 30) -> None:
        wanted = set(addresses)

        def up() -> bool:
            body = self._get("/api/v1/targets")
            if body is None:
                return False
            active = body["data"]["activeTargets"]
            healthy = {t["labels"]["instance"] for t in active if t["health"] == "up"}
            return wanted <= healthy

        self._wait(up, timeout, f"targets {sorted(wanted)} up")

    def wait_rules_healthy(self, count: int, timeout: float = 30) -> None:
        """Until ``count`` loaded rules have been evaluated, all without error."""

        def healthy() -> bool:
            body = self._get("/api/v1/rules")
            if body is None:
                return False
            rules = [r for g in body["data"]["groups"] for r in g["rules"]]
            bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
            assert not bad, f"rules failing: {bad}"
            return len(rules) == count and all(r["health"] == "ok" for r in rules)

        self._wait(healthy, timeout, f"{count} rules evaluated")

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert body is not None, f"Prometheus did not answer {promql}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_value(self, promql: str, expected: float, timeout: float = 30) -> None:
        """Until the (one) series of ``promql`` reads ``expected``: the scrape caught up."""

        def seen() -> bool:
            result = self.query(promql)
            return len(result) == 1 and float(result[0]["value"][1]) == expected

        self._wait(seen, timeout, f"{promql} == {expected:g}")

    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                text = response.read().decode()
        except (OSError, urllib.error.URLError):
            return None
        return json.loads(text) if text.startswith("{") else {}

    def _wait(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log_tail()}")
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"prometheus: {what} not within {timeout:g}s; {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.root / "prometheus.log").read_text()[-2000:]
        return ""


@contextlib.contextmanager
def running(binary: str, root: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(binary, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
