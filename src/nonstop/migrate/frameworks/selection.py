"""Only the new migrations: files changed since a git ref, or revisions after a given one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from nonstop.errors import UsageError


def _git(args: list[str], cwd: Path) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UsageError(f"--since needs git: {exc.strerror or exc}") from exc
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise UsageError(f"--since: git {' '.join(args)}: {detail[0]}")
    return proc.stdout


def changed_since(ref: str, cwd: Path) -> set[Path]:
    """Files added or modified since ``ref`` (committed, staged, or not), and untracked files,
    as resolved paths: what a pull request adds, as CI sees it."""
    top = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
    _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd)
    diff = _git(["diff", "--name-only", "--diff-filter=AMR", ref, "--"], cwd)
    new = _git(["ls-files", "--others", "--exclude-standard"], top)
    return {(top / name).resolve() for name in (diff + new).splitlines() if name}


class _Revision(Protocol):
    file: str
    revision: str
    parents: list[str]


def after_revision(units: Iterable[_Revision], revision: str) -> set[str]:
    """Files of the revisions that are not ``revision`` nor one of its ancestors."""
    items = list(units)
    by_id = {u.revision: u for u in items}
    if revision not in by_id:
        known = ", ".join(sorted(by_id)[:10])
        raise UsageError(f"--since-revision: no revision {revision!r} (known: {known})")
    old, todo = set(), [revision]
    while todo:
        current = todo.pop()
        if current in old or current not in by_id:
            continue
        old.add(current)
        todo.extend(by_id[current].parents)
    return {u.file for u in items if u.revision not in old}
