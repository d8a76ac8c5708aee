"""Retention: which releases and logs `.nonstop/` keeps, from tables; then prune on a real
store and real files, and `nonstop prune` itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nonstop.cli.main import main
from nonstop.config.schema import RetentionConfig
from nonstop.engine.retention import (
    LogFile,
    plan_logs,
    plan_releases,
    protected_releases,
    prune,
    release_of_log,
    rotate_log,
    state_dir_size,
)
from nonstop.store import DesiredState, Store, open_store

RELEASES = [(f"v{i}", float(i)) for i in range(1, 9)]

PLAN_RELEASES = [
    # (protected, keep, removed, kept)
    ({}, 3, ["v1", "v2", "v3", "v4", "v5"], ["v6", "v7", "v8"]),
    (
        {"v8": "active", "v7": "previous", "v2": "live"},
        3,
        ["v1", "v3", "v4", "v5"],
        ["v2", "v6", "v7", "v8"],
    ),
    ({"v1": "active"}, 1, ["v2", "v3", "v4", "v5", "v6", "v7"], ["v1", "v8"]),
    ({}, 100, [], [f"v{i}" for i in range(1, 9)]),
    ({f"v{i}": "in use" for i in range(1, 9)}, 1, [], [f"v{i}" for i in range(1, 9)]),
]


@pytest.mark.parametrize(("protected", "keep", "removed", "kept"), PLAN_RELEASES)
def test_plan_releases(
    protected: dict[str, str], keep: int, removed: list[str], kept: list[str]
) -> None:
    remove, why = plan_releases(RELEASES, protected, keep)
    assert remove == removed
    assert sorted(why) == kept
    for name, reason in protected.items():
        assert why[name] == reason


@pytest.mark.parametrize(
    ("name", "release"),
    [
        ("v2-3.log", "v2"),
        ("v2-3.log.2", "v2"),
        ("build-v2.log", "v2"),
        ("my-app-v2-1.log", "my-app-v2"),  # the longest release name that fits wins
        ("v2.log", "v2"),
        ("agent.log", None),
        ("smoke-4.log", None),
        ("v22-1.log", None),
    ],
)
def test_release_of_log(name: str, release: str | None) -> None:
    assert release_of_log(name, ["v2", "my-app-v2", "my-app"]) == release


POLICY = RetentionConfig(log_max_size=100, log_keep=2, log_max_age=1000.0)
NOW = 10_000.0
PLAN_LOGS = [
    # (file, live?, expected: "keep" | "remove" | "rotate")
    (LogFile("v3-1.log", 50, NOW), True, "keep"),
    (LogFile("v3-1.log", 500, NOW), True, "rotate"),
    (LogFile("v3-1.log.1", 500, NOW - 5000), True, "keep"),  # rotated file of a live log
    (LogFile("v3-1.log.3", 50, NOW), True, "remove"),  # beyond log_keep
    (LogFile("v3-2.log", 50, NOW - 5000), False, "remove"),  # stopped and old
    (LogFile("v3-2.log", 50, NOW - 10), False, "keep"),  # stopped, recent
    (LogFile("v3-2.log", 500, NOW - 10), False, "rotate"),
    (LogFile("v1-1.log", 50, NOW), False, "remove"),  # its release is removed
    (LogFile("build-v1.log", 50, NOW), False, "remove"),
    (LogFile("agent.log", 50, NOW - 5000), True, "keep"),
    (LogFile("notes.txt", 50, NOW - 5000), False, "keep"),
]


@pytest.mark.parametrize(("file", "live", "expected"), PLAN_LOGS)
def test_plan_logs(file: LogFile, live: bool, expected: str) -> None:
    base = file.name.split(".log")[0] + ".log"
    remove, rotate = plan_logs([file], {base} if live else set(), {"v1"}, {"v1", "v3"}, POLICY, NOW)
    got = "remove" if remove else "rotate" if rotate else "keep"
    assert got == expected


def _release(store: Store, state: Path, name: str) -> None:
    path = state / "releases" / name
    path.mkdir(parents=True)
    (path / "app.py").write_bytes(b"x" * 1000)
    store.add_release(name, str(path), "run {port}", {}, {})


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """Eight releases v1..v8: v8 active, v7 previous, v3 has a live instance, v2 is the
    candidate of a running rollout; instance logs and a build log."""
    state = tmp_path / ".nonstop"
    store = open_store(state)
    for i in range(1, 9):
        _release(store, state, f"v{i}")
    store.save_desired_state(DesiredState(active_release="v8", previous_release="v7"))
    store.upsert_instance("v3-1", "v3", {}, "ready")
    store.start_rollout("bluegreen", "v2", "v8", {})
    logs = state / "logs"
    logs.mkdir()
    for name in ("v1-1.log", "v3-1.log", "v8-1.log", "build-v4.log", "agent.log"):
        (logs / name).write_bytes(b"line\n" * 10)
    store.close()
    return state


def test_prune_keeps_what_is_needed_and_removes_the_rest(state: Path) -> None:
    store = open_store(state)
    policy = RetentionConfig(releases=2, log_max_size=20, log_keep=1)
    dry = prune(store, state, policy, dry_run=True)
    assert dry.releases_removed == ["v1", "v4", "v5", "v6"]
    assert sorted(os.listdir(state / "releases")) == [f"v{i}" for i in range(1, 9)]
    report = prune(store, state, policy)
    assert report.releases_removed == dry.releases_removed
    assert report.releases_kept == {
        "v2": "in the running rollout 1",
        "v3": "has a live instance (v3-1)",
        "v7": "the previous release (rollback target)",
        "v8": "the active release",
    }
    assert sorted(os.listdir(state / "releases")) == ["v2", "v3", "v7", "v8"]
    assert [r.name for r in store.releases()] == ["v2", "v3", "v7", "v8"]
    logs = sorted(os.listdir(state / "logs"))
    # v1's and build-v4's logs went with their releases; logs over 20 bytes rotated
    assert logs == [
        "agent.log",
        "agent.log.1",
        "v3-1.log",
        "v3-1.log.1",
        "v8-1.log",
        "v8-1.log.1",
    ]
    assert report.bytes_freed >= 4 * 1000
    store.close()


def test_protected_releases_are_read_from_the_store(state: Path) -> None:
    store = open_store(state)
    # a retire entry outlives the release's desired replicas: it protects nothing by itself
    desired = store.desired_state()
    desired.retire = {"v1": 1.0, "v6": 2.0}
    desired.replicas = {"v6": 2, "v8": 2}
    store.save_desired_state(desired)
    protected = protected_releases(store, ["v5"])
    assert protected == {
        "v8": "the active release",
        "v7": "the previous release (rollback target)",
        "v2": "in the running rollout 1",
        "v6": "kept warm (keep_previous)",
        "v3": "has a live instance (v3-1)",
        "v5": "has a live instance",
    }
    store.close()


def test_rotation_keeps_the_writer_appending(tmp_path: Path) -> None:
    log = tmp_path / "v1-1.log"
    with log.open("ab") as writer:  # as the local runtime opens an instance's log
        writer.write(b"old\n" * 100)
        writer.flush()
        rotate_log(log, keep=2)
        writer.write(b"new\n")
        writer.flush()
    assert log.read_bytes() == b"new\n"
    assert (tmp_path / "v1-1.log.1").read_bytes() == b"old\n" * 100
    rotate_log(log, keep=2)
    assert (tmp_path / "v1-1.log.2").read_bytes() == b"old\n" * 100


def test_state_dir_size(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 10)
    (tmp_path / "g").write_bytes(b"x" * 5)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "f")
    assert state_dir_size(tmp_path) == 15
    assert state_dir_size(tmp_path / "missing") == 0


def test_prune_command(
    state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = state.parent
    (project / "nonstop.toml").write_text(
        '[app]\nname = "x"\ncommand = "x {port}"\n[retention]\nreleases = 3\n'
    )
    monkeypatch.setenv("NONSTOP_PROJECT", str(project))
    with pytest.raises(SystemExit) as exited:
        main(["prune", "--dry-run", "--json"])
    assert exited.value.code == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True
    assert dry["releases_removed"] == ["v1", "v4", "v5"]
    with pytest.raises(SystemExit) as exited:
        main(["prune"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "releases removed: v1, v4, v5" in out
    assert sorted(os.listdir(state / "releases")) == ["v2", "v3", "v6", "v7", "v8"]
