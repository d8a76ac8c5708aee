"""The findings of a framework project, cached beside its rendered SQL.

The rendered-SQL cache (render.py) spares the project's Python; this one spares nonstop's
own parser and rules: with nothing changed, ``nonstop migrate lint`` reads the findings back
without importing pglast, the rules or the framework, so a re-lint costs the command's
start-up and the hashing of the migration files (docs/decisions/0431-lint-results-cache.md).

The key is the render key (every migration file's bytes, the files rendering depends on, the
renderer, the interpreter), the options that change verdicts, and a fingerprint of the linter
itself (nonstop's version and each linter module's size and modification time), so a changed
rule never answers from an old cache. Not used with a live schema (the database changes
without the files changing).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import nonstop
from nonstop.migrate.frameworks.project import show_path
from nonstop.migrate.lint.model import FileResult, Finding, LintOptions
from nonstop.migrate.lint.source import Source

RESULTS_FORMAT = 1
_LINTER = Path(__file__).resolve().parents[1]  # nonstop/migrate: lint/ and frameworks/


def linter_fingerprint() -> str:
    parts = [nonstop.__version__, str(RESULTS_FORMAT)]
    for folder in ("lint", "frameworks"):
        for path in sorted((_LINTER / folder).glob("*.py")):
            stat = path.stat()
            parts.append(f"{folder}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "\n".join(parts)


def results_key(render_key: str, options: LintOptions) -> str:
    chosen = f"{options.pg_version}|{options.phase}|{options.assume_lock_timeout}"
    text = "\0".join((render_key, chosen, linter_fingerprint()))
    return hashlib.sha256(text.encode()).hexdigest()


def read(path: Path, key: str) -> list[tuple[str, FileResult]] | None:
    """(migration file, its result) for every migration, or None: no cache, another key, or
    a file that cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        return [_result(entry) for entry in data["results"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _result(entry: dict[str, Any]) -> tuple[str, FileResult]:
    shown = show_path(entry["file"])
    findings = [Finding(row[0], row[1], shown, *row[2:]) for row in entry["findings"]]
    text = Path(entry["file"]).read_text(encoding="utf-8")
    return entry["file"], FileResult(Source(shown, text), entry["phase"], entry["count"], findings)


def write(path: Path, key: str, results: list[tuple[str, FileResult]]) -> None:
    data = {
        "key": key,
        "results": [
            {
                "file": file,
                "phase": result.phase,
                "count": result.statements,
                "findings": [[f.rule, f.severity, *f[3:]] for f in result.findings],
            }
            for file, result in results
        ],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs time
