"""Render an Alembic project's upgrade SQL per operation, in the project's own Python.

Run as a script (``python render_alembic.py alembic.ini OUT.json``) by the interpreter of the
project's environment: it imports only the standard library and Alembic, never nonstop. It runs
``alembic upgrade heads --sql`` (offline mode, the project's own env.py) and records each piece
of SQL Alembic emits together with the revision file and the line of the ``op.*`` call that
produced it (the first frame of the call stack inside a revision file). SQL emitted outside an
operation (``BEGIN``, ``COMMIT``, the version table) is recorded with no line.

Output: ``{"migrations": [{"file", "revision", "parents"}], "stream": [[file, line, col, sql]]}``
(the stream in the order Alembic emitted it; ``file`` is the revision being run, or null),
or ``{"error": {"file", "line", "message", "kind"}}`` with exit status 3.
"""

from __future__ import annotations

import gc
import io
import json
import os
import sys
import traceback
from typing import Any

#: Collect young objects only after this many allocations (CPython's default is 700). Loading
#: SQLAlchemy and Alembic creates ~200,000 objects that live until the end, which the default
#: threshold scans again and again, and each revision's operations make a little garbage in
#: reference cycles (a MetaData and its Table), which the collector still frees at this pace:
#: ~10% of the render's CPU saved on 200 revisions (docs/benchmarks/frameworks.md).
GC_THRESHOLD = 50_000


def _error(out: str, kind: str, message: str, file: str | None, line: int | None) -> None:
    data = {"error": {"kind": kind, "message": message, "file": file, "line": line}}
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    sys.exit(3)


def _where(exc: BaseException, files: set[str]) -> tuple[str | None, int | None]:
    """The revision file (and line) an exception came from, else the innermost project file
    (below the working directory, the project's) it passed through."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return os.path.realpath(exc.filename), exc.lineno
    root = os.path.realpath(os.getcwd()) + os.sep
    known: tuple[str | None, int | None] = (None, None)
    project: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith("<"):
            continue
        path = os.path.realpath(frame.filename)
        if path in files:
            known = (path, frame.lineno)
        elif path.startswith(root) and "site-packages" not in path:
            project = (path, frame.lineno)
    return known if known[0] else project


_POSITIONS: dict[Any, list[Any]] = {}


def _caller(files: set[str]) -> tuple[str | None, int, int]:
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if path in files:
            col = 1
            try:
                code = frame.f_code
                table = _POSITIONS.get(code)
                if table is None:  # one upgrade() may hold hundreds of operations
                    table = _POSITIONS[code] = list(code.co_positions())
                positions = table[frame.f_lasti // 2]
                col = (positions[2] or 0) + 1
            except (AttributeError, IndexError):
                pass
            return path, frame.f_lineno or 1, col
        frame = frame.f_back  # type: ignore[assignment]
    return None, 0, 0


def _realpath(path: str, dirs: dict[str, str]) -> str:
    """``os.path.realpath``, resolving each directory once: every revision of a directory
    shares it (realpath costs an lstat per path component)."""
    head, name = os.path.split(path)
    real = dirs.get(head)
    if real is None:
        real = dirs[head] = os.path.realpath(head)
    full = os.path.join(real, name)
    return os.path.realpath(full) if os.path.islink(full) else full


def main(ini: str, out: str) -> None:
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # a print() in env.py or a revision must not reach our output
    gc.disable()  # while the framework loads: nothing it creates then is garbage
    try:
        from alembic import command
        from alembic.config import Config
        from alembic.ddl.impl import DefaultImpl
        from alembic.operations import Operations
        from alembic.runtime.migration import MigrationContext
    except ImportError as exc:
        _error(out, "missing", f"cannot import alembic in {sys.executable}: {exc}", None, None)
    gc.freeze()  # the modules just loaded: never scanned again
    gc.set_threshold(GC_THRESHOLD)
    gc.enable()
    config = Config(ini, stdout=io.StringIO())
    # Revisions are known as Alembic runs them (each step names its Script): loading them
    # here first would import every revision twice.
    files: set[str] = set()
    by_file: dict[str, dict[str, Any]] = {}
    state: dict[str, Any] = {"file": None, "op": None, "started": False}
    stream: list[list[Any]] = []  # [file, line, col, sql]
    dirs: dict[str, str] = {}

    def static_output(self: Any, text: str) -> None:
        op = state["op"]
        if op is not None:
            stream.append([op[0], op[1], op[2], text])
        else:
            stream.append([state["file"], None, None, text])

    original_invoke = Operations.invoke

    def invoke(self: Any, operation: Any) -> Any:
        if state["op"] is not None:  # an operation made of operations (batch mode)
            return original_invoke(self, operation)
        path, line, col = _caller(files)
        state["op"] = (path, line, col) if path else None
        if path:
            state["file"] = path
        try:
            return original_invoke(self, operation)
        finally:
            state["op"] = None

    original_run = MigrationContext.run_migrations

    def run_migrations(self: Any, **kw: Any) -> None:
        steps_fn = self._migrations_fn

        def steps(heads: Any, context: Any) -> Any:
            for step in steps_fn(heads, context):
                revision = getattr(step, "revision", None)
                path = getattr(revision, "path", None)
                state["file"] = _realpath(path, dirs) if path else None
                state["started"] = True
                if revision is not None and state["file"]:
                    files.add(state["file"])
                    by_file[state["file"]] = {
                        "file": state["file"],
                        "revision": revision.revision,
                        "parents": list(revision._all_down_revisions),
                    }
                yield step

        self._migrations_fn = steps
        return original_run(self, **kw)

    DefaultImpl.static_output = static_output  # type: ignore[method-assign]
    Operations.invoke = invoke  # type: ignore[method-assign]
    MigrationContext.run_migrations = run_migrations  # type: ignore[method-assign]
    try:
        command.upgrade(config, "heads", sql=True)
    except SystemExit as exc:
        _error(out, "render", f"alembic exited with {exc.code}", state["file"], None)
    except Exception as exc:
        # before the first step runs, Alembic is loading the revisions: an import error
        file, line = _where(exc, files)
        kind = "render" if state["started"] else "import"
        _error(out, kind, f"{type(exc).__name__}: {exc}", file or state["file"], line)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"migrations": list(by_file.values()), "stream": stream}, fh)
    sys.stdout = real_stdout


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    # The output is written and closed: skip the interpreter's teardown, which would free
    # SQLAlchemy's and every revision's objects one by one (~5% of the render's CPU).
    sys.stderr.flush()
    os._exit(0)
