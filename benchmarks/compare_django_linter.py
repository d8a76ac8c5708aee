"""nonstop migrate lint against django-migration-linter on one Django corpus, side by side.

    .venv/bin/python benchmarks/compare_django_linter.py

The corpus is the Django table of tests/migrate/test_migrate_frameworks.py: one migration per
case (dangerous operations and their safe forms) on one app. django-migration-linter runs
Django's `sqlmigrate`, which connects to the database, so a private PostgreSQL is started
(initdb in a temporary directory) for it; nonstop needs none. Prints, per migration, the
expected rule, what each linter reported, and the time each took (one run each, whole process).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nonstop.migrate.tempdb import CANDIDATE_BIN_DIRS, TempPostgres

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "migrate" / "test_migrate_frameworks.py"
NONSTOP = str(Path(sys.executable).parent / "nonstop")


def _cases() -> object:
    spec = importlib.util.spec_from_file_location("framework_cases", TESTS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _binary(name: str) -> str:
    for directory in CANDIDATE_BIN_DIRS:
        if Path(directory, name).is_file():
            return str(Path(directory, name))
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install PostgreSQL (scripts/install-system-deps.sh)")
    return found


def run_nonstop(project: Path) -> tuple[dict[str, set[str]], float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [NONSTOP, "migrate", "lint", str(project), "--json", "--no-cache", "--assume-lock-timeout"],
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - start
    found: dict[str, set[str]] = {}
    for finding in json.loads(proc.stdout):
        found.setdefault(Path(finding["file"]).stem, set()).add(finding["rule"])
    return found, took


def run_dml(
    project: Path, env: dict[str, str], skip: list[str]
) -> tuple[dict[str, set[str]], float]:
    start = time.perf_counter()
    ignore = [arg for name in skip for arg in ("--ignore-name", name)]
    proc = subprocess.run(
        [sys.executable, "manage.py", "lintmigrations", "--no-cache", "--settings", "dml", *ignore],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
    )
    took = time.perf_counter() - start
    if os.environ.get("SHOW_DML"):
        print(proc.stdout, proc.stderr[-3000:])
    found: dict[str, set[str]] = {}
    current = None
    for line in proc.stdout.splitlines():
        head = re.match(r"\((\w+), (\w+)\)\.\.\.", line)
        if head:
            current = head[2]
            found.setdefault(current, set())
            continue
        if (current and line.startswith("\t")) or (current and line.startswith("    ")):
            found[current].add(line.strip())
    if proc.returncode not in (0, 1):
        print(proc.stdout[-2000:], proc.stderr[-2000:])
    return found, took


def main() -> None:
    cases = _cases()
    table = cases.DJANGO_CASES  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        migrations = [(None, True, cases.DJANGO_BASE)] + [  # type: ignore[attr-defined]
            (phase, atomic, ops) for _, phase, atomic, ops, _ in table
        ]
        project = cases.django_project(Path(tmp), migrations)  # type: ignore[attr-defined]
        (project / "dml.py").write_text(
            "from sampleproj.settings import *  # noqa\n"
            "INSTALLED_APPS = [*INSTALLED_APPS, 'django_migration_linter']\n"
        )
        root = Path(tempfile.mkdtemp(prefix="nonstop-pg-"))
        server = TempPostgres(root, _binary("initdb"), _binary("pg_ctl"))
        server.start()
        try:
            host_port = server.url.split("@", 1)[1].split("/", 1)[0]
            env = {
                **os.environ,
                "SAMPLE_DB_HOST": host_port.split(":")[0],
                "SAMPLE_DB_PORT": host_port.split(":")[1],
                "SAMPLE_DB_NAME": "postgres",
                "SAMPLE_DB_USER": server.url.split("//", 1)[1].split("@", 1)[0],
            }
            ours, our_time = run_nonstop(project)
            # sqlmigrate itself raises on AddIndexConcurrently in an atomic migration, and
            # django-migration-linter stops there (a traceback, no result for any migration):
            # that migration is left out of its run and shown as such
            crash = {
                f"{n:04d}_case": "sqlmigrate raises NotSupportedError (run stops)"
                for n, case in enumerate(table, start=2)
                if "AddIndexConcurrently" in case[3] and case[2]
            }
            theirs, their_time = run_dml(project, env, sorted(crash))
            for stem, text in crash.items():
                theirs[stem] = {text}
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
    print(f"{'case':<34} {'expected':<52} {'nonstop':<52} django-migration-linter")
    for number, (name, _, _, _, rules) in enumerate(table, start=2):
        stem = f"{number:04d}_case"
        expected = ",".join(sorted(rules)) or "-"
        got = ",".join(sorted(ours.get(stem, set()))) or "-"
        other = " | ".join(sorted(theirs.get(stem, set()))) or "-"
        print(f"{name:<34} {expected:<52} {got:<52} {other}")
    print(
        f"\nwhole process, one run each: nonstop {our_time:.2f} s (no database), "
        f"django-migration-linter {their_time:.2f} s (sqlmigrate against PostgreSQL)"
    )


if __name__ == "__main__":
    main()
