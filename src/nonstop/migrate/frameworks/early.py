"""Start the framework's renderer before the command line is even parsed.

``nonstop migrate lint PROJECT`` with a stale cache (or ``--no-cache``) spends most of its time
in the project's Python rendering the migrations: ~1.2 s of CPU for 200 Alembic revisions.
Before this, nonstop loaded click and its CLI, found the project and hashed its files (~0.15 s
of CPU) and only then started the renderer; afterwards it loaded the parser and the rules while
the renderer ran. Started from the entry point (nonstop.cli.entry), before click is imported,
the renderer runs while nonstop does all of that, so only the lint of the rendered SQL (and the
output) is left after it: docs/decisions/0530-render-started-at-entry.md.

Only the plain forms are recognized here: one path and options from :data:`VALUED` and
:data:`FLAGS`. Anything else (no path, ``--fix``, ``--help``, an unknown option, an error
finding the project) starts nothing: the command runs as before and reports its own errors.
The command line is still parsed and checked by click; render.render() takes the started
process only for the same project and interpreter, and a process nobody took (a usage error
later on) is killed at exit.
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nonstop.errors import NonstopError
from nonstop.migrate.frameworks.project import Project, Tool, detect

if TYPE_CHECKING:
    import subprocess
    import tempfile

#: Options that take a value, and flags, that the early start understands. The others
#: (``--fix``, ``--database-url``, ``--since``...) leave the command to render as usual.
VALUED = frozenset(
    {"--format", "--pg-version", "--phase", "--tool", "--settings", "--python", "--cache-dir"}
)
FLAGS = frozenset({"--json", "--assume-lock-timeout", "--no-cache", "--offline"})
DEFAULT_CACHE = Path(".nonstop/cache/lint")


@dataclass
class Started:
    project: Project
    python: str
    proc: subprocess.Popen[str]
    tmp: tempfile.TemporaryDirectory[str]
    out: Path


_started: list[Started] = []


def parse(args: list[str]) -> tuple[str, dict[str, str | None]] | None:
    """(the one path, {option: value or None}) of a plain ``migrate lint`` command line."""
    paths: list[str] = []
    options: dict[str, str | None] = {}
    items = iter(args)
    for arg in items:
        name, eq, value = arg.partition("=")
        if name in VALUED:
            options[name] = value if eq else next(items, None)
            if options[name] is None:
                return None
        elif arg in FLAGS:
            options[arg] = None
        elif arg.startswith("-"):
            return None
        else:
            paths.append(arg)
    return (paths[0], options) if len(paths) == 1 else None


def start(args: list[str]) -> None:
    """Start rendering the project ``args`` (after ``migrate lint``) names, when it is a
    framework project whose rendered SQL is not cached; otherwise do nothing."""
    parsed = parse(args)
    if parsed is None:
        return
    path, options = parsed
    tool = options.get("--tool")
    if tool not in (None, "auto", "alembic", "django"):
        return
    from nonstop.migrate.frameworks import render

    try:
        project = detect(Path(path), _tool(tool), options.get("--settings"))
        if project is None:
            return
        python = render.project_python(project, options.get("--python"))
        if "--no-cache" not in options:
            cache_dir = Path(options.get("--cache-dir") or DEFAULT_CACHE)
            cache_dir = cache_dir if cache_dir.is_absolute() else project.root / cache_dir
            if render.is_cached(project, python, cache_dir):
                return
        import tempfile  # here: a re-lint from the cache never needs it

        tmp = tempfile.TemporaryDirectory(prefix="nonstop-render-")
        out = Path(tmp.name) / "out.json"
        proc = render.spawn(project, python, out)
    except (NonstopError, OSError, ValueError):
        return  # the command finds the same problem and says it in its own words
    if not _started:
        atexit.register(_reap)
    _started.append(Started(project, python, proc, tmp, out))


def _tool(name: str | None) -> Tool | None:
    if name == "alembic":
        return "alembic"
    if name == "django":
        return "django"
    return None


def take(project: Project, python: str) -> Started | None:
    """The renderer started for this project and interpreter, if any (once)."""
    for started in _started:
        if started.project == project and started.python == python:
            _started.remove(started)
            return started
    return None


def _reap() -> None:
    """At exit: stop the renderers the command did not use (it failed before rendering)."""
    for started in _started:
        started.proc.kill()
        started.proc.communicate()
        started.tmp.cleanup()
    _started.clear()
