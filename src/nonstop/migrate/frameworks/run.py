"""Expand -> backfill -> contract for Alembic and Django: the framework applies, nonstop orders.

The framework's own history table stays the source of truth for what ran (``alembic_version``,
``django_migrations``); nonstop reads it, takes the phase of each pending migration from its
marker (``nonstop_phase = "..."``), and asks the framework to go as far as the step allows:

- expand (before the new release starts): the pending migrations up to the first one that is
  not an expand;
- backfill (after the new release serves): up to the first contract;
- contract (`nonstop migrate complete`): the rest, under the same gate as SQL contracts: no
  instance of an older release alive, nothing earlier still pending.

Migrations run strictly in the framework's order; a phase never jumps ahead of an earlier
migration. The framework runs in the project's Python with ``PGOPTIONS=-c lock_timeout=...``,
so every statement waits at most ``lock_timeout`` for its lock, as with the SQL runner, and
with ``DATABASE_URL`` set to the configured URL (env.py / settings read it, as they usually do).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg

from nonstop.config.schema import MigrationsConfig
from nonstop.errors import UsageError
from nonstop.migrate import db
from nonstop.migrate.errors import ContractBlocked, DatabaseUnavailable, MigrationFailed
from nonstop.migrate.frameworks.lint import python_phase
from nonstop.migrate.frameworks.project import Project, alembic_project, django_project
from nonstop.migrate.frameworks.render import Unit, load, project_python
from nonstop.migrate.phases import Phase
from nonstop.migrate.policy import contract_blockers

Step = Literal["expand", "backfill", "contract"]
#: what each step may run, in order, before it must stop
ALLOWED: dict[Step, frozenset[Phase]] = {
    "expand": frozenset({"expand"}),
    "backfill": frozenset({"expand", "backfill"}),
    "contract": frozenset({"expand", "backfill", "contract"}),
}


@dataclass(frozen=True)
class Pending:
    revision: str
    file: str
    phase: Phase


# -- pure: what a step runs --------------------------------------------------------------------


def applied_closure(units: Iterable[Unit], recorded: set[str]) -> set[str]:
    """Recorded revisions and their ancestors (Alembic records only its heads)."""
    parents = {u.revision: u.parents for u in units}
    done: set[str] = set()
    todo = list(recorded)
    while todo:
        current = todo.pop()
        if current in done:
            continue
        done.add(current)
        todo.extend(parents.get(current, ()))
    return done


def step_plan(pending: list[Pending], step: Step) -> list[Pending]:
    """The longest prefix of ``pending`` (in run order) whose phases ``step`` may run.

    >>> p = [Pending("1", "a", "expand"), Pending("2", "b", "backfill")]
    >>> [m.revision for m in step_plan(p, "expand")], [m.revision for m in step_plan(p, "backfill")]
    (['1'], ['1', '2'])
    """
    out = []
    for migration in pending:
        if migration.phase not in ALLOWED[step]:
            break
        out.append(migration)
    return out


def contract_gate(
    pending: list[Pending], active: str | None, live: Iterable[tuple[str, str]]
) -> list[str]:
    """Why the contract step may not run now (empty: it may)."""
    blockers = contract_blockers(active, live)
    if any(m.phase == "contract" for m in pending):
        first = next(i for i, m in enumerate(pending) if m.phase == "contract")
        blockers += [
            f"{m.phase} {m.revision} has not run yet; run `nonstop migrate start` first"
            for m in pending[:first]
        ]
    return blockers


# -- I/O: the project, its history table, the framework's command -----------------------------


@dataclass(frozen=True)
class FrameworkTarget:
    project: Project
    python: str
    url: str
    lock_timeout: float
    env: Mapping[str, str]


def resolve(
    config: MigrationsConfig, base_dir: Path, env: Mapping[str, str] | None = None
) -> FrameworkTarget:
    root = Path(config.project)
    root = root if root.is_absolute() else base_dir / root
    if config.tool == "alembic":
        project = alembic_project(root / "alembic.ini" if root.is_dir() else root)
    elif config.tool == "django":
        project = django_project(root.resolve(), root, config.settings)
    else:
        raise UsageError(f"[migrations] tool {config.tool!r} is not a framework")
    environ = dict(os.environ if env is None else env)
    url = db.resolve_url(config.database_url, environ)
    return FrameworkTarget(
        project, project_python(project, config.python), url, config.lock_timeout, environ
    )


def pending_migrations(target: FrameworkTarget) -> list[Pending]:
    cache = target.project.root / ".nonstop" / "cache" / "lint"
    units = load(target.project, target.python, cache)
    recorded = applied_closure(units, _recorded(target))
    out = []
    for unit in units:
        if unit.revision in recorded:
            continue
        path = Path(unit.file)
        out.append(Pending(unit.revision, unit.file, python_phase(path, path.read_text())))
    return out


def _recorded(target: FrameworkTarget) -> set[str]:
    query = (
        "SELECT version_num FROM alembic_version"
        if target.project.tool == "alembic"
        else "SELECT app || '.' || name FROM django_migrations"
    )
    try:
        with psycopg.connect(target.url, autocommit=True, connect_timeout=10) as conn:
            try:
                return {row[0] for row in conn.execute(query)}
            except psycopg.errors.UndefinedTable:
                return set()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"{db.describe(target.url)}: {exc}".strip()) from exc


def _commands(target: FrameworkTarget, todo: list[Pending]) -> list[list[str]]:
    if target.project.tool == "alembic":
        ini = str(target.project.config)
        return [[target.python, "-m", "alembic", "-c", ini, "upgrade", todo[-1].revision]]
    last: dict[str, str] = {}  # app -> its last migration to reach, in run order
    for m in todo:
        app, name = m.revision.split(".", 1)
        last.pop(app, None)
        last[app] = name
    manage = str(target.project.root / "manage.py")
    settings = ["--settings", target.project.settings] if target.project.settings else []
    return [
        [target.python, manage, "migrate", app, name, "--no-input", *settings]
        for app, name in last.items()
    ]


def _apply(target: FrameworkTarget, todo: list[Pending]) -> None:
    ms = max(1, round(target.lock_timeout * 1000))
    env = {
        **target.env,
        "DATABASE_URL": target.url,
        "PGOPTIONS": f"{target.env.get('PGOPTIONS', '')} -c lock_timeout={ms}ms".strip(),
    }
    for command in _commands(target, todo):
        proc = subprocess.run(
            command, cwd=target.project.root, env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
            raise MigrationFailed(todo[-1].file, 1, f"{' '.join(command[1:4])} ... failed: {tail}")


def run_step(target: FrameworkTarget, step: Step) -> list[str]:
    """Apply what ``step`` may run; the revisions applied, in order. The contract step checks
    nothing itself: call ``run_contract`` for the gate."""
    todo = step_plan(pending_migrations(target), step)
    if todo:
        _apply(target, todo)
    return [m.revision for m in todo]


def run_contract(target: FrameworkTarget, state_dir: Path) -> list[str]:
    """`nonstop migrate complete` for a framework: refused while an older release is alive."""
    from nonstop.store import active_release, live_instances

    pending = pending_migrations(target)
    blockers = contract_gate(pending, active_release(state_dir), live_instances(state_dir))
    if blockers and any(m.phase == "contract" for m in pending):
        raise ContractBlocked(blockers)
    todo = step_plan(pending, "contract")
    if todo:
        _apply(target, todo)
    return [m.revision for m in todo]
