"""`nonstop notify test` against real receivers: one that takes it, one that is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from notify.receiver import ThreadedReceiver, free_port

APP = '[app]\nname = "shop"\ncommand = "python3 app.py --port {port}"\n'


def nonstop(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NONSTOP_PROJECT": str(project), "HOOK_SECRET": "k"}
    return subprocess.run(
        [sys.executable, "-m", "nonstop.cli", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_notify_test_reports_each_receiver(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"
    with ThreadedReceiver() as hook:
        (tmp_path / "nonstop.toml").write_text(
            f'{APP}[[notify]]\nurl = "{hook.url}"\nsecret = "$HOOK_SECRET"\nevents = ["paused"]\n'
            f'[[notify]]\nurl = "{down}"\nretries = 0\n'
        )
        done = nonstop(tmp_path, "notify", "test", "--json")
        text = nonstop(tmp_path, "notify", "test")
    assert done.returncode == 1, done.stderr
    [ok, failed] = json.loads(done.stdout)
    assert ok == {"receiver": hook.url, "ok": True, "error": None}
    assert failed["receiver"] == down
    assert failed["ok"] is False
    assert "Connect call failed" in failed["error"] or "refused" in failed["error"].lower()
    assert text.stdout.startswith(f"{hook.url}: ok\n{down}: failed: ")
    body = hook.received[0].json
    assert body["event"] == "test"
    assert body["message"] == "a test notice from nonstop for shop: this receiver works"
    assert hook.received[0].headers["X-Nonstop-Signature"].startswith("sha256=")


def test_notify_test_without_receivers_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "nonstop.toml").write_text(APP)
    done = nonstop(tmp_path, "notify", "test")
    assert (done.returncode, done.stderr) == (
        2,
        "error: nonstop.toml has no [[notify]] table: nothing to test\n",
    )
