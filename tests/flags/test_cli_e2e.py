"""`nonstop flags` end to end: the CLI against a real agent (real Caddy, real app), the SDK
on the agent's client API, a guarded rollout judged on the router's real error rate, and
guarded rollouts judged on the outcomes the SDK reports for the flag's users."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from UnleashClient import UnleashClient

from e2e.harness import AgentProcess, Project, free_port
from flags.test_client_api import wait_for
from nonstop.cli.main import main
from nonstop.flags import Client

pytestmark = pytest.mark.slow


@dataclass
class FlagsProject(Project):
    flags_port: int = 0

    @property
    def flags_url(self) -> str:
        return f"http://127.0.0.1:{self.flags_port}"


@pytest.fixture
def flags_project(tmp_path: Path) -> FlagsProject:
    """The e2e sample-app project, with the flag client API on a free port."""
    root = tmp_path / "shop"
    root.mkdir()
    app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
    (root / "app.py").write_text(app)
    project = FlagsProject(root, free_port(), flags_port=free_port())
    project.write_config(extra=f'\n[flags]\nlisten = "127.0.0.1:{project.flags_port}"\n')
    return project


@pytest.fixture
def running(flags_project: FlagsProject) -> Iterator[AgentProcess]:
    agent = AgentProcess(flags_project)
    agent.start()
    yield agent
    agent.cleanup()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    flags_project: FlagsProject, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """`nonstop ARGS` in this process (the same main() as the console script, against the
    real agent): a subprocess per call would cost half a second of imports each."""
    monkeypatch.setenv("NONSTOP_PROJECT", str(flags_project.root))

    def run(*args: str, check: bool = False) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = capsys.readouterr()
        code = exited.value.code if isinstance(exited.value.code, int) else 1
        if check:
            assert code == 0, f"nonstop {' '.join(args)} -> {code}\n{err}"
        return Result(code, out, err)

    return run


def test_flags_cli_end_to_end(
    flags_project: FlagsProject,
    running: AgentProcess,
    cli: Callable[..., Result],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="UnleashClient")
    assert "no flags yet" in cli("flags", "list", check=True).stdout
    token = cli("flags", "token", "create", "--name", "web", check=True).stdout.strip()
    assert token.startswith("nonstop:")
    tokens = json.loads(cli("flags", "token", "list", "--json", check=True).stdout)
    assert [t["name"] for t in tokens] == ["web"]

    created = cli("flags", "create", "checkout", "--percent", "100", check=True)
    assert "created checkout: enabled, rollout 100%" in created.stdout
    rows = json.loads(cli("flags", "list", "--json", check=True).stdout)
    assert [(r["name"], r["enabled"], r["rollout"]) for r in rows] == [("checkout", True, "100")]
    assert "checkout" in cli("flags", "list", check=True).stdout

    unleash = UnleashClient(
        url=f"{flags_project.flags_url}/api",
        app_name="shop",
        instance_id="e2e",
        refresh_interval=1,
        metrics_interval=1,
        custom_headers={"Authorization": token},
        cache_directory=str(flags_project.root / "unleash-cache"),
    )
    unleash.initialize_client()
    sdk = Client(flags_project.flags_url, token, app_name="shop", refresh_interval=3600)
    try:
        ctx = {"userId": "1"}
        assert sdk.streaming.wait(10)
        assert wait_for(lambda: sdk.is_enabled("checkout", ctx))
        assert wait_for(lambda: unleash.is_enabled("checkout", ctx))
        cli("flags", "disable", "checkout", check=True)  # the kill switch
        assert wait_for(lambda: not sdk.is_enabled("checkout", ctx), timeout=10)
        assert wait_for(lambda: not unleash.is_enabled("checkout", ctx), timeout=10)
        cli("flags", "enable", "checkout", check=True)
        assert wait_for(lambda: sdk.is_enabled("checkout", ctx), timeout=10)
        assert wait_for(lambda: unleash.is_enabled("checkout", ctx), timeout=10)
    finally:
        sdk.close()
        unleash.destroy()

    cli("flags", "rollout", "checkout", "--percent", "30", check=True)
    shown = json.loads(cli("flags", "show", "checkout", "--json", check=True).stdout)
    assert (shown["rollout"], shown["enabled"]) == ("30", True)
    text = cli("flags", "show", "checkout", check=True).stdout
    assert "rollout set to 30%" in text
    assert "disabled (kill switch)" in text

    exported = flags_project.root / "flags.json"
    cli("flags", "export", str(exported), check=True)
    document = json.loads(exported.read_text())
    assert [f["name"] for f in document["features"]] == ["checkout"]

    bad = flags_project.root / "bad.json"
    broken = json.loads(exported.read_text())
    broken["features"][0]["strategies"][0]["constraints"] = [
        {"contextName": "userId", "operator": "LIKE", "values": ["1"]}
    ]
    bad.write_text(json.dumps(broken))
    refused = flags_project.cli("flags", "import", str(bad))  # a real process: exit code 2
    assert refused.returncode == 2
    assert 'features[0] "checkout": strategies[0].constraints[0].operator: unknown operator' in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert json.loads(cli("flags", "export", check=True).stdout) == document  # still serving

    document["features"].append({**document["features"][0], "name": "search"})
    exported.write_text(json.dumps(document))
    assert "imported 2 flags" in cli("flags", "import", str(exported), check=True).stdout

    cli("flags", "delete", "search", check=True)
    missing = cli("flags", "show", "search")
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        'error: no flag "search" (`nonstop flags list` shows the flags)',
    )
    both = cli("flags", "rollout", "checkout", "--percent", "5", "--stop")
    assert both.returncode == 2
    assert "exactly one of --percent N, --steps LIST, --stop" in both.stderr
    dup = cli("flags", "create", "checkout")
    assert (dup.returncode, dup.stderr.strip()) == (1, 'error: flag "checkout" already exists')
    bad_name = cli("flags", "create", "no/slash")
    assert bad_name.returncode == 2
    assert "flag name: expected letters, digits" in bad_name.stderr


def hit(url: str, count: int) -> int:
    errors = 0
    for _ in range(count):
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
        except urllib.error.HTTPError:
            errors += 1
    return errors


def test_guarded_rollout_disables_on_the_routers_error_rate(
    flags_project: Project, running: AgentProcess
) -> None:
    row = running.deploy("v1", ERROR_RATE="0.5")
    assert running.wait_rollout(row["id"])["status"] == "completed"
    cli = flags_project.cli
    cli("flags", "create", "checkout", check=True)
    started = cli(
        "flags", "rollout", "checkout", "--steps", "10,50,100", "--every", "1h",
        "--max-error-rate", "0.05", "--min-requests", "20",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert hit(flags_project.url, 60) >= 20

    def failed() -> bool:
        shown = json.loads(cli("flags", "show", "checkout", "--json", check=True).stdout)
        return bool(shown["guarded_rollout"] == "failed")

    assert wait_for(failed, timeout=30)
    shown = json.loads(cli("flags", "show", "checkout", "--json", check=True).stdout)
    assert shown["enabled"] is False
    assert shown["guarded"]["reason"].startswith("error rate ")
    assert "is above 5.0% at step 1 of 3 (10%)" in shown["guarded"]["reason"]
    text = cli("flags", "show", "checkout", check=True).stdout
    assert "disabled automatically: error rate" in text
    events = cli("events", check=True).stdout
    assert "flag checkout: disabled automatically" in events


def test_guarded_rollout_resumes_after_kill_9(
    flags_project: FlagsProject, running: AgentProcess, cli: Callable[..., Result]
) -> None:
    cli("flags", "create", "checkout", check=True)
    cli("flags", "rollout", "checkout", "--steps", "10,60", "--every", "1s", check=True)
    running.kill9()  # mid-step: nothing but the store remembers the plan
    running.start()

    def completed() -> bool:
        shown = json.loads(cli("flags", "show", "checkout", "--json", check=True).stdout)
        return bool(shown["guarded_rollout"] == "completed")

    assert wait_for(completed, timeout=30)
    shown = json.loads(cli("flags", "show", "checkout", "--json", check=True).stdout)
    assert (shown["enabled"], shown["rollout"]) == (True, "60")
    assert "flags: resuming the guarded rollout of checkout" in cli("events", check=True).stdout


def test_guarded_rollouts_judge_the_flags_users(
    flags_project: FlagsProject, running: AgentProcess, cli: Callable[..., Result]
) -> None:
    """Two guarded rollouts on the real agent, outcomes from the real SDK's `guard`: the
    users of "bad" fail 10% of the time and the others never -> "bad" is disabled by itself;
    the users of "good" and the others both fail 2% -> "good" advances to the end."""
    token = cli("flags", "token", "create", "--name", "web", check=True).stdout.strip()
    for name, every in (("bad", "1h"), ("good", "1s")):
        cli("flags", "create", name, check=True)
        steps = ("--steps", "20,50,100", "--every", every, "--min-requests", "20")
        cli("flags", "rollout", name, *steps, check=True)
    fail_every = {("bad", True): 10, ("good", True): 50, ("good", False): 50}
    seen = {key: itertools.count(1) for key in itertools.product(("bad", "good"), (True, False))}
    users = itertools.count()

    def show(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(cli("flags", "show", name, "--json", check=True).stdout)
        return data

    sdk = Client(flags_project.flags_url, token, app_name="shop", metrics_interval=0.2)
    try:
        assert sdk.ready.wait(10)

        def serve_and_check() -> bool:
            for _ in range(40):  # deterministic failures: every n-th outcome of a group fails
                user = {"userId": str(next(users))}
                for name in ("bad", "good"):
                    with contextlib.suppress(RuntimeError), sdk.guard(name, user) as enabled:
                        n = fail_every.get((name, enabled))
                        if n and next(seen[name, enabled]) % n == 0:
                            raise RuntimeError("the flagged code path failed")
            states = (show("bad")["guarded_rollout"], show("good")["guarded_rollout"])
            return states == ("failed", "completed")

        assert wait_for(serve_and_check, timeout=120)
    finally:
        sdk.close()
    bad, good = show("bad"), show("good")
    assert bad["enabled"] is False
    assert bad["guarded"]["reason"].startswith("the flag's users fail more often than the others")
    assert "at step 1 of 3 (20%)" in bad["guarded"]["reason"]
    assert bad["guarded"]["plan"]["basis"] == "outcomes"
    assert (good["enabled"], good["rollout"], good["guarded"]["plan"]["basis"]) == (
        True,
        "100",
        "outcomes",
    )
    assert "guarded rollout: step 2 of 3: 50%" in [e["message"] for e in good["events"]]
    assert "flag bad: disabled automatically: the flag's users" in cli("events", check=True).stdout
