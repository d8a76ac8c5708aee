"""Run a framework's own offline rendering in the project's Python; cache what it printed.

The renderer scripts (render_alembic.py, render_django.py beside this module) import nothing
from nonstop, so they run in the project's environment: ``--python``, else ``.venv/bin/python``
or ``venv/bin/python`` in the project, else ``$VIRTUAL_ENV``'s, else the interpreter running
nonstop. They write JSON: the SQL of each migration, statement by statement, with the line
and column of the operation that produced it.

Rendering costs a process and the framework's import (0.3-1 s); linting the result costs
milliseconds. So the rendered units are kept under the cache directory, keyed by a hash of
every migration file, the files rendering depends on (alembic.ini, env.py, the settings
module), the renderer and the interpreter: an unchanged project is linted without starting
Python again (docs/decisions/0371-framework-lint-cache.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nonstop.errors import UsageError
from nonstop.migrate.frameworks.project import Project
from nonstop.migrate.lint.model import LintInputError

if TYPE_CHECKING:
    import subprocess

HERE = Path(__file__).resolve().parent
CACHE_FORMAT = 1

Segment = tuple[int | None, int | None, str]


@dataclass
class Unit:
    """One migration as the linter reads it: SQL statements, each with its operation's place."""

    file: str
    revision: str
    parents: list[str]
    prelude: list[str] = field(default_factory=list)  # session state carried in: BEGIN, SET
    segments: list[Segment] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "revision": self.revision,
            "parents": self.parents,
            "prelude": self.prelude,
            "segments": [list(s) for s in self.segments],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        segments = [(s[0], s[1], s[2]) for s in data["segments"]]
        return cls(data["file"], data["revision"], data["parents"], data["prelude"], segments)


def project_python(project: Project, given: str | None) -> str:
    if given:
        return given
    for candidate in (".venv/bin/python", "venv/bin/python"):
        if (project.root / candidate).is_file():
            return str(project.root / candidate)
    venv = os.environ.get("VIRTUAL_ENV")
    if venv and Path(venv, "bin/python").is_file():
        return str(Path(venv, "bin/python"))
    return sys.executable


def _digest(paths: list[Path], extra: list[str]) -> str:
    h = hashlib.sha256()
    for item in extra:
        h.update(item.encode() + b"\0")
    for path in paths:
        h.update(str(path).encode() + b"\0")
        try:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            h.update(b"-")
    return h.hexdigest()


_KEYS: dict[tuple[Project, str], str] = {}


def cache_key(project: Project, python: str) -> str:
    """The hash of what the rendering depends on; computed once per command (the entry point's
    early start and the lint both ask: early.py)."""
    key = _KEYS.get((project, python))
    if key is None:
        renderer = HERE / f"render_{project.tool}.py"
        extra = [str(CACHE_FORMAT), project.tool, python, project.settings or ""]
        key = _KEYS[(project, python)] = _digest([renderer, *project.inputs, *project.files], extra)
    return key


def cache_path(project: Project, cache_dir: Path, kind: str = "") -> Path:
    """The project's cache file of ``kind`` ("" for the rendered SQL, "results")."""
    name = hashlib.sha256(str(project.config).encode()).hexdigest()[:16]
    return cache_dir / f"{project.tool}-{name}{'.' + kind if kind else ''}.json"


def load(
    project: Project, python: str, cache_dir: Path | None, key: str | None = None
) -> list[Unit]:
    """The project's migrations rendered: from the cache when nothing changed (``key``:
    cache_key's, when the caller has it already)."""
    key = key or cache_key(project, python)
    cache_file = None
    if cache_dir is not None:
        cache_file = cache_path(project, cache_dir)
        cached = _read_cache(cache_file, key)
        if cached is not None:
            return cached
    units = render(project, python)
    if cache_file is not None:
        _write_cache(cache_file, key, units)
    return units


def _read_cache(path: Path, key: str) -> list[Unit] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        return [Unit.from_json(u) for u in data["units"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # no cache, or an unreadable one: render again


def _write_cache(path: Path, key: str, units: list[Unit]) -> None:
    data = {"key": key, "units": [u.to_json() for u in units]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs time


#: Run the renderer as ``__main__`` with the project directory (not the renderer's) first on
#: sys.path, as the framework's own command line has it.
_BOOT = (
    "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def is_cached(project: Project, python: str, cache_dir: Path) -> bool:
    """Whether the project's rendered SQL is cached under its current key (reads the key at
    the head of the cache file only: _write_cache writes it first)."""
    head = f'{{"key": "{cache_key(project, python)}"'.encode()
    try:
        with cache_path(project, cache_dir).open("rb") as handle:
            return handle.read(len(head)) == head
    except OSError:
        return False


def spawn(project: Project, python: str, out: Path) -> subprocess.Popen[str]:
    """The renderer of the project's framework, running; it writes its JSON to ``out``."""
    import subprocess  # here: a cache hit (the usual case in CI) starts no process

    script = HERE / f"render_{project.tool}.py"
    if project.tool == "alembic":
        args = [str(project.config), str(out)]
    else:
        args = [str(project.root), project.settings or "", str(out)]
    try:
        return subprocess.Popen(
            [python, "-c", _BOOT, str(script), *args],
            cwd=project.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as exc:
        raise UsageError(f"--python {python}: cannot run: {exc.strerror or exc}") from exc


def render(project: Project, python: str) -> list[Unit]:
    import tempfile

    from nonstop.migrate.frameworks import early

    started = early.take(project, python)
    if started is not None:  # the entry point started it before the CLI loaded
        tmp, out, proc = started.tmp, started.out, started.proc
    else:
        tmp = tempfile.TemporaryDirectory(prefix="nonstop-render-")
        out = Path(tmp.name) / "out.json"
        proc = spawn(project, python, out)
    with tmp:
        with proc:
            # while the framework renders (0.3-1 s), load the parser and the rules (~0.1 s)
            _load_linter()
            _, stderr = proc.communicate()
        try:
            data = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tail = "\n".join(stderr.strip().splitlines()[-5:])
            raise LintInputError(
                f"{project.config}: rendering the {project.tool} migrations with {python} "
                f"failed (exit {proc.returncode}):\n{tail}"
            ) from None
    if "error" in data:
        raise LintInputError(_error_text(project, python, data["error"]))
    if project.tool == "alembic":
        return alembic_units(data)
    return django_units(data)


def _load_linter() -> None:
    """Import the parser and the rules with the cyclic collector paused, then freeze what they
    made: thousands of classes and functions that live to the end and are no garbage, which
    the collector would otherwise scan while they load and again during the lint of every
    migration (~5% of nonstop's own CPU on 200 revisions)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        import nonstop.migrate.frameworks.lint  # noqa: F401
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _error_text(project: Project, python: str, error: dict[str, Any]) -> str:
    kind, message = error.get("kind"), error.get("message", "")
    file, line = error.get("file"), error.get("line")
    where = f"{_show(file)}:{line}" if file and line else _show(file) if file else None
    if kind == "missing":
        return f"{message} (install {project.tool} in that environment, or pass --python)"
    if project.tool == "django" and kind == "settings":
        at = f" ({where})" if where else ""
        return f"Django settings {project.settings!r} cannot be loaded{at}: {message}"
    what = "revision" if project.tool == "alembic" else "migration"
    verb = "does not import" if kind == "import" else "cannot be rendered"
    return f"{where or project.config}: {what} {verb}: {message}"


def _show(path: str | None) -> str:
    if not path:
        return ""
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


# -- from the renderer's output to units --------------------------------------------------------

_TXN_OPEN = re.compile(r"\s*(BEGIN|START\s+TRANSACTION)\b", re.I)
_TXN_CLOSE = re.compile(r"\s*(COMMIT|END|ROLLBACK|ABORT)\b", re.I)
_SET_TIMEOUT = re.compile(r"\s*SET\s+(SESSION\s+)?lock_timeout\s*(=|TO)\s*'?(\w+)", re.I)
_RESET_TIMEOUT = re.compile(r"\s*RESET\s+(lock_timeout|ALL)\b", re.I)
_KEEP = re.compile(
    r"\s*(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SET|RESET)\b|.*\bset_config\s*\(",
    re.I | re.S,
)


def alembic_units(data: dict[str, Any]) -> list[Unit]:
    """Group Alembic's output stream by revision. SQL outside any operation is kept only when
    it changes the session the next statements run in (transactions, SET); the version table's
    bookkeeping goes. A revision starts with the state the stream was in before it: inside a
    transaction (``BEGIN``) or not, and a session ``lock_timeout`` set by env.py or an earlier
    revision."""
    info = {m["file"]: m for m in data["migrations"]}
    units: dict[str, Unit] = {}
    in_txn, timeout = False, None
    for file, line, col, sql in data["stream"]:
        unit = None
        if file in info:
            unit = units.get(file)
            if unit is None:
                meta = info[file]
                prelude = (["BEGIN;"] if in_txn else []) + ([timeout] if timeout else [])
                unit = units[file] = Unit(file, meta["revision"], meta["parents"], prelude)
        if _TXN_OPEN.match(sql):
            in_txn = True
        elif _TXN_CLOSE.match(sql):
            in_txn = False
        elif (found := _SET_TIMEOUT.match(sql)) is not None:
            timeout = None if found[3] == "0" else sql
        elif _RESET_TIMEOUT.match(sql):
            timeout = None
        if unit is not None and (line is not None or _KEEP.match(sql)):
            unit.segments.append((line, col, sql))
    for file, meta in info.items():  # revisions without a statement
        units.setdefault(file, Unit(file, meta["revision"], meta["parents"]))
    return list(units.values())


def django_units(data: dict[str, Any]) -> list[Unit]:
    """One unit per migration; an atomic migration runs inside one transaction."""
    units = []
    for m in data["migrations"]:
        segments: list[Segment] = [(s[0], s[1], s[2]) for s in m["segments"]]
        if m["atomic"] and segments:
            segments = [(None, None, "BEGIN;"), *segments, (None, None, "COMMIT;")]
        units.append(Unit(m["file"], m["revision"], m["parents"], [], segments))
    return units
