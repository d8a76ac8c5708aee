"""Render a Django project's migrations as SQL per operation, in the project's own Python.

Run as a script (``python render_django.py PROJECT_DIR SETTINGS OUT.json``) by the interpreter
of the project's environment: it imports only the standard library and Django, never nonstop.
What ``manage.py sqlmigrate`` prints for each migration, computed the way ``sqlmigrate`` does
(the schema editor in ``collect_sql`` mode, over the project state of every migration before),
but per operation: each statement comes with the line and column of the operation in the
migration's ``operations`` list, and SQL that Django defers to the end of a migration (indexes
and constraints of new fields) goes back to the operation that queued it. No migration is
applied and the database is not asked which ones ran; only operations that inspect the
database (some AlterField cases, as with ``sqlmigrate``) need it reachable.

Output: ``{"migrations": [{"file", "revision", "parents", "atomic", "segments"}]}`` with
segments ``[[line, col, sql]]``, or ``{"error": {...}}`` with exit status 3.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import traceback
from typing import Any


def _error(out: str, kind: str, message: str, file: str | None, line: int | None) -> None:
    data = {"error": {"kind": kind, "message": message, "file": file, "line": line}}
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    sys.exit(3)


def _where(exc: BaseException, root: str) -> tuple[str | None, int | None]:
    """The project file (and line) an exception came from, if any."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return os.path.realpath(exc.filename), exc.lineno
    found: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith("<"):
            continue
        path = os.path.realpath(frame.filename)
        if path.startswith(root + os.sep) and "site-packages" not in path:
            found = (path, frame.lineno)
    return found


def _operation_positions(path: str, count: int) -> list[tuple[int, int]]:
    """(line, column) of each element of ``operations = [...]`` in the Migration class; the
    line of the assignment (or of the class) for every operation when the list is not literal."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    fallback = (1, 1)
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) or node.name != "Migration":
            continue
        fallback = (node.lineno, node.col_offset + 1)
        for item in node.body:
            value: ast.expr | None
            if isinstance(item, ast.Assign):
                targets, value = item.targets, item.value
            elif isinstance(item, ast.AnnAssign):
                targets, value = [item.target], item.value
            else:
                continue
            if not any(isinstance(t, ast.Name) and t.id == "operations" for t in targets):
                continue
            fallback = (item.lineno, item.col_offset + 1)
            if isinstance(value, (ast.List, ast.Tuple)) and len(value.elts) == count:
                return [(e.lineno, e.col_offset + 1) for e in value.elts]
    return [fallback] * count


def _offline_compose(connection: Any) -> None:
    """Bind parameters into SQL on the client without connecting (Django's PostgreSQL backend
    asks the server's connection to do it, so ``sqlmigrate`` always connects)."""
    try:
        from psycopg.sql import quote

        def literal(value: Any) -> str:
            return str(quote(value, None))

    except ImportError:  # psycopg2
        from psycopg2.extensions import adapt

        def literal(value: Any) -> str:
            return str(adapt(value).getquoted().decode())

    def compose_sql(sql: str, params: Any) -> str:
        if not params:
            return sql
        if isinstance(params, dict):
            return sql % {key: literal(value) for key, value in params.items()}
        return sql % tuple(literal(value) for value in params)

    connection.ops.compose_sql = compose_sql


def _render(migration: Any, state: Any, connection: Any) -> tuple[list[list[Any]], Any]:
    """Segments of one migration, and the project state after it."""
    path = os.path.realpath(sys.modules[migration.__module__].__file__ or "")
    positions = _operation_positions(path, len(migration.operations))
    editor = connection.schema_editor(collect_sql=True, atomic=False)
    editor.__enter__()
    segments: list[list[Any]] = []
    owner: dict[int, tuple[int, int]] = {}
    for operation, (line, col) in zip(migration.operations, positions):  # noqa: B905 (runs on 3.8+)
        if not operation.reduces_to_sql:  # RunPython: nothing to render, as sqlmigrate does
            continue
        old_state = state.clone()
        operation.state_forwards(migration.app_label, state)
        before, queued = len(editor.collected_sql), len(editor.deferred_sql)
        operation.database_forwards(migration.app_label, editor, old_state, state)
        for sql in editor.collected_sql[before:]:
            segments.append([line, col, sql])
        for item in editor.deferred_sql[queued:]:
            owner.setdefault(id(item), (line, col))
    deferred = list(editor.deferred_sql)
    before = len(editor.collected_sql)
    editor.__exit__(None, None, None)
    for item, sql in zip(deferred, editor.collected_sql[before:]):  # noqa: B905
        place = owner.get(id(item))
        segments.append([place[0] if place else None, place[1] if place else None, sql])
    return segments, state


def main(project: str, settings: str, out: str) -> None:
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # a print() in settings or a migration must not reach our output
    root = os.path.realpath(project)
    sys.path.insert(0, root)
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    try:
        import django
    except ImportError as exc:
        _error(out, "missing", f"cannot import django in {sys.executable}: {exc}", None, None)
    try:
        django.setup()
    except Exception as exc:
        file, line = _where(exc, root)
        _error(out, "settings", f"{type(exc).__name__}: {exc}", file, line)
    try:
        from django.db import connections
        from django.db.migrations.loader import MigrationLoader

        connection = connections[os.environ.get("NONSTOP_DJANGO_DATABASE", "default")]
        if connection.vendor != "postgresql":
            _error(
                out,
                "settings",
                f"settings {settings}: the database uses {connection.vendor}, "
                "nonstop lints PostgreSQL migrations (set ENGINE to django.db.backends.postgresql)",
                None,
                None,
            )
        _offline_compose(connection)
        loader = MigrationLoader(None, ignore_no_migrations=True)
    except SystemExit:
        raise
    except Exception as exc:
        file, line = _where(exc, root)
        _error(out, "import", f"{type(exc).__name__}: {exc}", file, line)
    plan: list[Any] = []
    seen: set[Any] = set()
    for leaf in sorted(loader.graph.leaf_nodes()):
        for key in loader.graph.forwards_plan(leaf):
            if key not in seen:
                seen.add(key)
                plan.append(key)
    migrations = []
    state = None
    current: str | None = None
    try:
        for key in plan:
            migration = loader.graph.nodes[key]
            current = os.path.realpath(sys.modules[migration.__module__].__file__ or "")
            if state is None:
                state = loader.project_state(key, at_end=False)
            mine = current.startswith(root + os.sep) and "site-packages" not in current
            segments, state = _render(migration, state, connection)
            if not mine:
                continue
            migrations.append(
                {
                    "file": current,
                    "revision": f"{key[0]}.{key[1]}",
                    "parents": [f"{a}.{b}" for a, b in migration.dependencies if b != "__first__"],
                    "atomic": bool(migration.atomic),
                    "segments": segments,
                }
            )
    except Exception as exc:
        file, line = _where(exc, root)
        _error(out, "render", f"{type(exc).__name__}: {exc}", file or current, line)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"migrations": migrations}, fh)
    sys.stdout = real_stdout


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
