"""Which kind of migrations a path holds, and where a framework project keeps them.

- Alembic: an ``alembic.ini`` (the file, or a directory holding it); its ``script_location``
  (and ``version_locations``) name the revision directories.
- Django: a directory with ``manage.py`` (every app's ``migrations/`` below it), or one app's
  ``migrations/`` package (that app only; the project is the nearest parent with ``manage.py``).
  The settings module comes from ``--settings``, ``$DJANGO_SETTINGS_MODULE``, or the
  ``os.environ.setdefault("DJANGO_SETTINGS_MODULE", ...)`` line of ``manage.py``.
- Anything else: SQL files, as before.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nonstop.errors import UsageError

Tool = Literal["sql", "alembic", "django"]
TOOLS: tuple[Tool, ...] = ("sql", "alembic", "django")

_SKIP_DIRS = frozenset({"site-packages", "node_modules", "__pycache__"})
_SETDEFAULT = re.compile(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']""")


@dataclass(frozen=True)
class Project:
    """A framework project: where its helper runs and which files are its migrations."""

    tool: Tool
    root: Path  # the directory the renderer runs in
    config: Path  # alembic.ini, or the Django project directory
    files: tuple[Path, ...]  # every migration file (resolved), for the cache key and selection
    inputs: tuple[Path, ...]  # other files the rendering depends on (env.py, settings)
    settings: str | None = None
    only: Path | None = None  # lint only migrations below this directory


def detect(path: Path, tool: Tool | None, settings: str | None) -> Project | None:
    """The framework project at ``path``, or None for SQL files."""
    if tool == "sql":
        return None
    ini = path if path.name == "alembic.ini" else path / "alembic.ini"
    script_dir = _alembic_script_dir(path)
    if script_dir is not None and not ini.is_file():
        # the script directory (env.py + versions/) or versions/ itself: its alembic.ini is
        # usually one level up from the script directory
        ini = script_dir.parent / "alembic.ini"
        if not ini.is_file():
            raise UsageError(
                f"{path}: an Alembic script directory; give the alembic.ini that names it"
            )
    if tool == "alembic" or (tool is None and ini.is_file()):
        if not ini.is_file():
            raise UsageError(f"{path}: no alembic.ini here (give the file or its directory)")
        return alembic_project(ini)
    django_root = _django_root(path)
    if tool == "django" or (tool is None and django_root is not None):
        if django_root is None:
            raise UsageError(
                f"{path}: not a Django project (no manage.py here or above an app's migrations/)"
            )
        return django_project(django_root, path, settings)
    return None


# -- Alembic ----------------------------------------------------------------------------------


def _alembic_script_dir(path: Path) -> Path | None:
    for candidate in (path, path.parent):
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    return None


def alembic_project(ini: Path) -> Project:
    import configparser

    ini = ini.resolve()
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent)})
    try:
        parser.read(ini, encoding="utf-8")
        location = parser.get("alembic", "script_location", fallback=None)
        versions = parser.get("alembic", "version_locations", fallback=None)
    except configparser.Error as exc:
        raise UsageError(f"{ini}: cannot read: {exc}") from exc
    if not location:
        raise UsageError(f"{ini}: no script_location in its [alembic] section")
    if ":" in location and not Path(location).exists():
        raise UsageError(
            f"{ini}: script_location {location!r} names a package resource; give a directory path"
        )
    script = _relative(ini.parent, location)
    dirs = (
        [_relative(ini.parent, v) for v in re.split(r"[\s,]+", versions.strip()) if v]
        if (versions)
        else [script / "versions"]
    )
    files = sorted({p for d in dirs if d.is_dir() for p in _python_files(d)})
    return Project("alembic", ini.parent, ini, tuple(files), (ini, script / "env.py"))


def _relative(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _python_files(directory: Path) -> list[Path]:
    """Every ``*.py`` below ``directory`` but ``__init__.py``, resolved, not entering linked
    directories (as ``rglob``). The directory is resolved once and the walk joins names to it;
    only a linked file is resolved on its own (resolving each of 200 revision paths costs an
    lstat per path component: ~30 ms)."""
    out = []
    pending = [os.path.realpath(directory)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in _SKIP_DIRS:
                        pending.append(entry.path)
                elif entry.name.endswith(".py") and entry.name != "__init__.py":
                    linked = entry.is_symlink()
                    out.append(Path(os.path.realpath(entry.path) if linked else entry.path))
    return out


# -- Django -----------------------------------------------------------------------------------


def _django_root(path: Path) -> Path | None:
    path = path.resolve()
    if path.is_file():
        path = path.parent
    if (path / "manage.py").is_file():
        return path
    if (path / "migrations" / "__init__.py").is_file():  # an app: its migrations
        path = path / "migrations"
    if path.name == "migrations" and (path / "__init__.py").is_file():
        for parent in path.parents:
            if (parent / "manage.py").is_file():
                return parent
    return None


def django_settings(root: Path, given: str | None) -> str:
    if given:
        return given
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return os.environ["DJANGO_SETTINGS_MODULE"]
    try:
        found = _SETDEFAULT.search((root / "manage.py").read_text(encoding="utf-8"))
    except OSError:
        found = None
    if found is None:
        raise UsageError(
            f"{root}: which Django settings? pass --settings MODULE or set DJANGO_SETTINGS_MODULE"
        )
    return found[1]


def django_project(root: Path, path: Path, settings: str | None) -> Project:
    module = django_settings(root, settings)
    files = sorted(
        p.resolve()
        for p in root.rglob("migrations/*.py")
        if p.name != "__init__.py"
        and not _SKIP_DIRS.intersection(p.parts)
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    settings_file = root / (module.replace(".", "/") + ".py")
    only = path.resolve() if path.resolve() != root else None
    return Project(
        "django", root, root, tuple(files), (root / "manage.py", settings_file), module, only
    )


def show_path(path: str) -> str:
    """A path as findings show it: relative to the current directory when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
