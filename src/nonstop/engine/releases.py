"""Releases: immutable, named copies of what to run, kept so rollback never rebuilds anything."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nonstop.config.load import to_wire
from nonstop.config.schema import NonstopConfig
from nonstop.config.validate import copy_excludes, validate_env, validate_release_name
from nonstop.errors import UsageError
from nonstop.store import ReleaseRow, Store


def check_name(name: str) -> None:
    validate_release_name(name)


def check_request(name: str, env: Mapping[str, str]) -> None:
    """A deploy request's name and environment, checked before anything changes (the API
    answers 400, and no rollout is left stuck in ``starting`` on a bad variable)."""
    validate_release_name(name)
    validate_env(env, "deploy: env")


def existing_release(
    store: Store, name: str, config: NonstopConfig, env: Mapping[str, str]
) -> ReleaseRow | None:
    """The kept release ``name`` when deploying it again describes the same thing.

    A release is immutable (rollback must get exactly what ran before), so the same name with
    another command or environment is refused. The stored environment is the merged one
    (``[app] env`` under the request's own), so that is what the request is compared as."""
    check_name(name)
    existing = store.release(name)
    if existing is not None and (
        existing.command != config.app.command
        or existing.env != merged_env(config, env)
        or _processes(existing.config) != _processes(to_wire(config))
    ):
        raise UsageError(  # bad input (exit 2), not a state of the system
            f"release {name} already exists with a different command, environment or "
            "[processes]; "
            "releases are immutable: deploy under a new name"
        )
    return existing


def _processes(wire: Mapping[str, Any]) -> Any:
    return wire.get("processes", {})


def merged_env(config: NonstopConfig, env: Mapping[str, str]) -> dict[str, str]:
    """A release's environment: ``[app] env``, then the deploy request's own on top."""
    return {**config.app.env, **env}


def copy_release(releases_dir: Path, name: str, source: Path, config: NonstopConfig) -> Path:
    """Copy ``source`` to ``releases_dir/name``; return the directory instances run in."""
    if not source.is_dir():
        raise UsageError(f"release directory {source} does not exist")
    target = releases_dir / name
    if target.exists():
        shutil.rmtree(target)
    app = config.app
    ignored = shutil.ignore_patterns(*copy_excludes(app.copy_include, app.copy_exclude))
    shutil.copytree(source, target, ignore=ignored, symlinks=True)
    cwd = target / config.app.cwd if config.app.cwd else target
    if not cwd.is_dir():
        raise UsageError(f"app.cwd: {config.app.cwd} is not a directory inside {source}")
    return cwd


async def build_release(
    name: str, cwd: Path, env: Mapping[str, str], build: str, log_path: Path, timeout: float
) -> None:
    """Run the release's build command once, in its own directory; raise with the log's tail."""
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_shell(
            build, cwd=cwd, stdout=log, stderr=log, env={**os.environ, **env}
        )
        try:
            code = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise UsageError(f"build of {name} did not finish within {timeout:g}s") from None
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        detail = "\n  ".join(tail)
        raise UsageError(f"build of {name} failed (exit code {code}); {log_path}:\n  {detail}")
