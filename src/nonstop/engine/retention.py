"""Retention: what ``.nonstop/`` keeps, applied after each rollout and by ``nonstop prune``.

Releases: the ``[retention] releases`` newest copies are kept, and on top of them every release
that something still needs. Never removed, whatever the count (each one a reason in the
report):

- the active release, and the previous one (the rollback target: invariant 5);
- the candidate and stable release of a running rollout;
- a release with desired replicas, a live instance, or kept warm for ``keep_previous``.

Removing a release deletes its row and its directory. The protected set is read again inside
the same ``BEGIN IMMEDIATE`` transaction that deletes the rows, so a deploy committing in
between (a rollout that now references the release) wins: its release is not deleted. The
directory is first renamed to ``releases/.pruned-NAME-*`` (instant), then deleted, so a new
deploy of the same name never has its fresh copy removed under it.

Logs (``.nonstop/logs/*.log``): a log over ``log_max_size`` is rotated, copy-then-truncate
(the instance keeps writing to the same open file, opened for append), keeping ``log_keep``
rotated files ``NAME.log.1`` (newest) ... ``NAME.log.N``. The logs of instances that no
longer run are deleted with their release, or once older than ``log_max_age``.

The planning functions (`plan_releases`, `plan_logs`) are pure and table-tested; `prune`
does the reading and the deleting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nonstop.config.schema import NonstopConfig, RetentionConfig
from nonstop.errors import explain
from nonstop.store import Store

if TYPE_CHECKING:
    from nonstop.engine.engine import Engine

TRASH_PREFIX = ".pruned-"
ROTATED = re.compile(r"(?P<base>.+\.log)\.(?P<n>\d+)")


@dataclass(frozen=True, slots=True)
class LogFile:
    name: str
    size: int
    mtime: float


@dataclass
class PruneReport:
    dry_run: bool
    releases_removed: list[str] = field(default_factory=list)
    releases_kept: dict[str, str] = field(default_factory=dict)
    logs_removed: list[str] = field(default_factory=list)
    logs_rotated: list[str] = field(default_factory=list)
    bytes_freed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "releases_removed": self.releases_removed,
            "releases_kept": self.releases_kept,
            "logs_removed": self.logs_removed,
            "logs_rotated": self.logs_rotated,
            "bytes_freed": self.bytes_freed,
        }


# -- pure planning -------------------------------------------------------------------------------


def plan_releases(
    releases: Iterable[tuple[str, float]], protected: Mapping[str, str], keep: int
) -> tuple[list[str], dict[str, str]]:
    """``(remove, kept)`` from ``(name, created_at)`` pairs: the ``keep`` newest and every
    protected release stay (``kept`` says why); the rest go, oldest first.

    Worked example: v1..v8 created in order, keep 3, active v8, previous v7, v2 has a live
    instance -> kept v6, v7, v8 (newest 3; v7 and v8 are also protected) and v2; removed v1,
    v3, v4, v5."""
    ordered = sorted(releases, key=lambda r: (r[1], r[0]), reverse=True)
    newest = {name for name, _ in ordered[:keep]}
    kept: dict[str, str] = {}
    remove: list[str] = []
    for name, _ in reversed(ordered):
        if name in protected:
            kept[name] = protected[name]
        elif name in newest:
            kept[name] = f"among the {keep} newest"
        else:
            remove.append(name)
    return remove, kept


def release_of_log(name: str, releases: Iterable[str]) -> str | None:
    """The release an instance or build log belongs to (``v2-3.log``, ``build-v2.log``)."""
    base = ROTATED.fullmatch(name)
    stem = (base.group("base") if base else name).removesuffix(".log")
    stem = stem.removeprefix("build-")
    for release in sorted(releases, key=len, reverse=True):
        if stem == release or re.fullmatch(re.escape(release) + r"-\d+", stem):
            return release
    return None


def plan_logs(
    files: Iterable[LogFile],
    live: set[str],
    removed_releases: set[str],
    known_releases: set[str],
    policy: RetentionConfig,
    now: float,
) -> tuple[list[str], list[str]]:
    """``(remove, rotate)``: file names to delete and logs to rotate.

    ``live`` holds the base names (``v2-3.log``, ``agent.log``) still written to: those are
    rotated when too big but never deleted. Others are deleted when their release is removed
    or when older than ``max_age``; rotated files beyond ``log_keep`` always go."""
    remove: list[str] = []
    rotate: list[str] = []
    for f in files:
        rotated = ROTATED.fullmatch(f.name)
        base = rotated.group("base") if rotated else f.name
        if not base.endswith(".log"):
            continue
        if rotated and int(rotated.group("n")) > policy.log_keep:
            remove.append(f.name)
            continue
        if base in live:
            if not rotated and f.size > policy.log_max_size:
                rotate.append(f.name)
            continue
        release = release_of_log(f.name, known_releases | removed_releases)
        if release in removed_releases or now - f.mtime > policy.log_max_age:
            remove.append(f.name)
        elif not rotated and f.size > policy.log_max_size:
            rotate.append(f.name)
    return sorted(remove), sorted(rotate)


# -- reading the store ---------------------------------------------------------------------------


def protected_releases(store: Store, live_releases: Iterable[str] = ()) -> dict[str, str]:
    """Every release something still needs, with the reason (read in the caller's
    transaction when it deletes)."""
    reasons: dict[str, str] = {}

    def add(name: object, why: str) -> None:
        if isinstance(name, str) and name:
            reasons.setdefault(name, why)

    state = store.desired_state()
    add(state.active_release, "the active release")
    add(state.previous_release, "the previous release (rollback target)")
    running = store.running_rollout()
    if running is not None:
        add(running.candidate, f"in the running rollout {running.id}")
        add(running.stable, f"in the running rollout {running.id}")
    retire = state.retire  # may still name releases no longer desired
    for name in state.replicas:
        add(name, "kept warm (keep_previous)" if name in retire else "has desired replicas")
    for row in store.instances():
        add(row.release, f"has a live instance ({row.id})")
    for name in live_releases:
        add(name, "has a live instance")
    return reasons


def live_log_names(store: Store, live_ids: Iterable[str] = ()) -> set[str]:
    names = {f"{row.id}.log" for row in store.instances()}
    names |= {f"{i}.log" for i in live_ids}
    return names | {"agent.log"}


# -- doing it ------------------------------------------------------------------------------------


def prune(
    store: Store,
    state_dir: Path,
    policy: RetentionConfig,
    *,
    dry_run: bool = False,
    live_releases: Iterable[str] = (),
    live_ids: Iterable[str] = (),
    now: float | None = None,
    remove_dirs: Callable[[list[Path]], None] | None = None,
) -> PruneReport:
    """Apply ``policy`` to ``state_dir`` (or, with ``dry_run``, only say what it would do)."""
    now = time.time() if now is None else now
    live_releases, live_ids = list(live_releases), list(live_ids)
    report = PruneReport(dry_run)
    releases_dir = state_dir / "releases"
    with contextlib.ExitStack() as stack:
        db = None if dry_run else stack.enter_context(store.transaction())
        rows = [(r.name, r.created_at) for r in store.releases()]
        protected = protected_releases(store, live_releases)
        remove, report.releases_kept = plan_releases(rows, protected, policy.releases)
        for name in remove:
            report.bytes_freed += state_dir_size(releases_dir / name)
            if db is not None:
                db.execute("DELETE FROM releases WHERE name = ?", (name,))
        report.releases_removed = remove
        live_logs = live_log_names(store, live_ids)
    trash = [] if dry_run else _to_trash(releases_dir, remove)
    trash += [] if dry_run else _old_trash(releases_dir, set(trash))
    if trash:
        (remove_dirs or _remove_dirs)(trash)
    known = {n for n, _ in rows}
    _prune_logs(state_dir / "logs", report, live_logs, set(remove), known, policy, now)
    return report


def _prune_logs(
    logs: Path,
    report: PruneReport,
    live: set[str],
    removed: set[str],
    known: set[str],
    policy: RetentionConfig,
    now: float,
) -> None:
    files = list(_log_files(logs))
    sizes = {f.name: f.size for f in files}
    remove, rotate = plan_logs(files, live, removed, known, policy, now)
    report.logs_removed, report.logs_rotated = remove, rotate
    report.bytes_freed += sum(sizes[name] for name in remove)
    if report.dry_run:
        return
    for name in remove:
        with contextlib.suppress(FileNotFoundError):
            (logs / name).unlink()
    for name in rotate:
        rotate_log(logs / name, policy.log_keep)


def rotate_log(path: Path, keep: int) -> None:
    """Copy-then-truncate: ``NAME.log`` -> ``NAME.log.1`` (older ones shift up, the one past
    ``keep`` is dropped); the writer keeps its append-mode file and writes from 0 again.
    Lines written between the copy and the truncate are lost (logrotate's copytruncate)."""
    if keep <= 0:
        with path.open("r+b") as handle:
            handle.truncate(0)
        return
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with path.open("r+b") as handle:
        handle.truncate(0)


def _log_files(logs: Path) -> Iterable[LogFile]:
    try:
        entries = list(os.scandir(logs))
    except FileNotFoundError:
        return
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                yield LogFile(entry.name, info.st_size, info.st_mtime)


def _to_trash(releases_dir: Path, names: list[str]) -> list[Path]:
    moved = []
    for name in names:
        source = releases_dir / name
        target = releases_dir / f"{TRASH_PREFIX}{name}-{secrets.token_hex(4)}"
        with contextlib.suppress(FileNotFoundError):
            source.rename(target)
            moved.append(target)
    return moved


def _old_trash(releases_dir: Path, skip: set[Path]) -> list[Path]:
    """Directories an interrupted prune renamed but did not finish deleting."""
    if not releases_dir.is_dir():
        return []
    return [p for p in releases_dir.glob(f"{TRASH_PREFIX}*") if p not in skip]


def _remove_dirs(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def state_dir_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed; 0 if it is gone)."""
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    stack.append(Path(entry.path))
                elif stat.S_ISREG(info.st_mode):
                    total += info.st_size
    return total


# -- the engine's hook ---------------------------------------------------------------------------


def after_rollout(engine: Engine, config: NonstopConfig) -> None:
    """Called by the engine when a rollout finishes (under its lock: no deploy runs now).
    Directories are deleted off the event loop; a failure is an event, never an exception."""
    try:
        live = [i for i in engine.instances.live.values() if i.state != "stopped"]
        report = prune(
            engine.store,
            engine.state_dir,
            config.retention,
            live_releases={i.release for i in live},
            live_ids={i.id for i in live},
            remove_dirs=_remove_dirs_in_background,
        )
    except Exception as exc:  # retention must never break a rollout's finish
        engine.emit("warning", f"retention: pruning failed: {explain(exc)}")
        return
    if report.releases_removed or report.logs_removed:
        removed = ", ".join(report.releases_removed) or "none"
        engine.emit(
            "info",
            f"retention: removed releases {removed} and {len(report.logs_removed)} logs "
            f"({report.bytes_freed / 1e6:.1f} MB)",
        )


def _remove_dirs_in_background(paths: list[Path]) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _remove_dirs(paths)
        return
    loop.run_in_executor(None, _remove_dirs, paths)
