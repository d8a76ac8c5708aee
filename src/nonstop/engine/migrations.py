"""Schema changes that travel with a release (invariant 6).

``nonstop deploy`` runs the release's pending *expand* migrations before any instance of it
starts, so the new code finds its columns and the old code keeps working; it runs pending
*backfills* once the rollout completed, in the background. *Contract* migrations never run
here: `nonstop migrate complete` runs them once no instance of an older release is alive.
The migrations directory is read from the release's own copy, so a release carries its schema.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from nonstop.config.schema import NonstopConfig


def _target_env(env: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **env}


async def expand(config: NonstopConfig, release_dir: Path, env: Mapping[str, str]) -> list[str]:
    """Apply pending expand migrations; return their names. Errors propagate (deploy refused)."""
    if config.migrations is None:
        return []
    if config.migrations.tool != "sql":
        return await asyncio.to_thread(_framework_step, config, release_dir, env, "expand")
    from nonstop.migrate.runner import run_expand

    settings = config.migrations
    summary = await asyncio.to_thread(
        run_expand, settings, base_dir=release_dir, env=_target_env(env)
    )
    return [applied.name for applied in summary.applied]


async def backfill(
    config: NonstopConfig,
    release_dir: Path,
    env: Mapping[str, str],
    emit: Callable[[str, str], None],
) -> None:
    """Run pending backfills after a completed rollout; report through ``emit``, never raise."""
    if config.migrations is None:
        return
    from nonstop.errors import NonstopError
    from nonstop.migrate.runner import run_backfill

    if config.migrations.tool != "sql":
        try:
            names = await asyncio.to_thread(_framework_step, config, release_dir, env, "backfill")
        except NonstopError as exc:
            emit("error", f"backfill failed: {exc}; `nonstop migrate start` resumes it")
            return
        for name in names:
            emit("info", f"{config.migrations.tool} migration {name} applied (backfill step)")
        return
    try:
        summary = await asyncio.to_thread(
            run_backfill, config.migrations, base_dir=release_dir, env=_target_env(env)
        )
    except NonstopError as exc:
        emit("error", f"backfill failed: {exc}; `nonstop migrate start` resumes it")
        return
    for result in summary.backfills:
        emit(
            "info", f"backfill {result.name}: {result.rows} rows at {result.rows_per_s:.0f} rows/s"
        )


def _framework_step(
    config: NonstopConfig, release_dir: Path, env: Mapping[str, str], step: str
) -> list[str]:
    """Alembic or Django: the framework applies what the step may run (frameworks/run.py)."""
    from nonstop.migrate.frameworks import run

    assert config.migrations is not None
    target = run.resolve(config.migrations, release_dir, _target_env(env))
    return run.run_step(target, "expand" if step == "expand" else "backfill")
