"""Benchmark `nonstop migrate lint` against squawk (the Rust linter) on one generated corpus.

    .venv/bin/python benchmarks/bench_lint.py [--statements 20000] [--repeat 3] [--profile]

Generates a realistic mixed migration corpus (DDL and DML, comments, safe and unsafe forms;
every statement kind a rule or the linter's state reads),
then measures in the same run:

* in-process: where the time goes (parse to JSON, cutting it at statements, decoding, rules),
  the fast path (only what the rules read is decoded) against the full-tree path, and the
  other ways pglast offers to get at the tree (``parse_sql`` Python objects,
  ``parse_sql_protobuf``);
* end to end: a fresh process of each linter on the same file, output to /dev/null, runs
  interleaved, best and median wall time, CPU time, statements per second and the ratios;
  the full-tree path runs end to end too, as the baseline of the same run.

Our commands run with bytecode caching on (in a temporary ``PYTHONPYCACHEPREFIX``, after one
warm-up run), as an installed package has its ``.pyc`` files; otherwise every run would compile
the linter's modules again (``PYTHONDONTWRITEBYTECODE`` is set in some environments).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pglast import parser as pg

from nonstop.migrate.lint import lint_text, tree
from nonstop.migrate.lint.engine import _split, lazy_statements, parse
from nonstop.migrate.lint.source import Source

ROOT = Path(__file__).resolve().parent.parent
SQUAWK = Path(sys.executable).parent / "squawk"
# what the plain JSON lint imports before it reads a file (cli/lint_fast.py, decision 0520)
_IMPORTS = (
    "import nonstop.cli.main, nonstop.cli.lint_fast; "
    "from nonstop.migrate.lint import load_engine; load_engine()"
)


def corpus(statements: int, seed: int = 7) -> str:
    """Migration-shaped SQL: each block is what a team writes for one change."""
    rng = random.Random(seed)
    tables = [f"app.{name}_{i}" for i in range(40) for name in ("orders", "users", "events")]
    out: list[str] = ["SET lock_timeout = '2s';", "SET statement_timeout = '5min';"]
    n = 0

    def table() -> str:
        return rng.choice(tables)

    blocks: list[Callable[[int], list[str]]] = [
        lambda i: [
            f"CREATE TABLE app.audit_{i} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            f"user_id bigint NOT NULL REFERENCES {table()} (id), action text NOT NULL, "
            "payload jsonb DEFAULT '{}'::jsonb, created_at timestamptz NOT NULL DEFAULT now());",
            f"CREATE INDEX audit_{i}_user_idx ON app.audit_{i} (user_id, created_at DESC);",
        ],
        lambda i: [f"ALTER TABLE {table()} ADD COLUMN note_{i} varchar(200) DEFAULT 'none';"],
        lambda i: [
            f"CREATE INDEX CONCURRENTLY idx_{i} ON {table()} (lower(email)) "
            "WHERE deleted_at IS NULL;"
        ],
        lambda i: [f"CREATE INDEX idx_plain_{i} ON {table()} (status, created_at);"],
        lambda i: [
            f"-- copy batch {i}",
            f"UPDATE {table()} SET status = 'archived', updated_at = now() "
            f"WHERE id >= {i * 5000} AND id < {(i + 1) * 5000} AND status = 'closed';",
        ],
        lambda i: [
            "INSERT INTO app.settings (key, value, updated_at) "
            f"VALUES ('flag_{i}', '{{\"on\": true}}', now()) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;"
        ],
        lambda i: [
            f"ALTER TABLE {table()} ADD CONSTRAINT fk_{i} FOREIGN KEY (account_id) "
            "REFERENCES app.accounts (id) NOT VALID;",
            f"ALTER TABLE {table()} VALIDATE CONSTRAINT fk_{i};",
        ],
        lambda i: [f"ALTER TABLE {table()} ALTER COLUMN code_{i % 50} SET NOT NULL;"],
        lambda i: [f"ALTER TABLE {table()} ALTER COLUMN amount TYPE numeric(14, 2);"],
        lambda i: [f"ALTER TABLE {table()} RENAME COLUMN old_{i} TO new_{i};"],
        lambda i: [
            f"DELETE FROM app.sessions WHERE expires_at < now() - interval '{i % 30} days';"
        ],
        lambda i: [
            f"SELECT u.id, count(o.id) FROM {table()} u "
            "LEFT JOIN app.orders_1 o ON o.user_id = u.id "
            "WHERE u.created_at > now() - interval '1 day' "
            f"GROUP BY u.id HAVING count(o.id) > {i % 7};"
        ],
        # every other kind of statement a rule or the state reads, a few of each
        lambda i: [
            f"ALTER TABLE {table()} ADD CONSTRAINT ck_{i} CHECK (total >= 0) NOT VALID;",
            f"ALTER TABLE {table()} VALIDATE CONSTRAINT ck_{i};",
        ],
        lambda i: [f"ALTER TABLE {table()} ADD CONSTRAINT uq_{i} UNIQUE (code_{i % 50});"],
        lambda i: [f"ALTER TABLE {table()} ADD COLUMN n_{i} bigint NOT NULL;"],
        lambda i: [f"ALTER TABLE {table()} ALTER COLUMN code_{i % 50} DROP NOT NULL;"],
        lambda i: [f"ALTER TABLE {table()} DROP COLUMN legacy_{i};"],
        lambda i: [f"ALTER TABLE {table()} RENAME TO renamed_{i};"],
        lambda i: [f"DROP INDEX CONCURRENTLY IF EXISTS app.idx_{i};"],
        lambda i: [f"DROP INDEX app.idx_old_{i};"],
        lambda i: [f"DROP TABLE IF EXISTS app.scratch_{i};"],
        lambda i: [f"TRUNCATE app.staging_{i % 10};"],
        lambda i: [f"REINDEX INDEX CONCURRENTLY app.idx_{i};", f"REINDEX TABLE {table()};"],
        lambda i: [f"VACUUM (ANALYZE) {table()};", f"VACUUM FULL {table()};"],
        lambda i: [f"CLUSTER {table()} USING idx_{i};"],
        lambda i: [
            f"REFRESH MATERIALIZED VIEW CONCURRENTLY app.totals_{i % 5};",
            f"REFRESH MATERIALIZED VIEW app.daily_{i % 5};",
        ],
        lambda i: [
            f"CREATE TRIGGER trg_{i} BEFORE UPDATE ON {table()} "
            "FOR EACH ROW EXECUTE FUNCTION app.touch();"
        ],
        lambda i: [f"LOCK TABLE {table()} IN SHARE MODE;"],
        lambda i: [f"ALTER TABLE {table()} SET TABLESPACE fast_{i % 3};"],
        lambda i: [
            "BEGIN;",
            "SET LOCAL lock_timeout = '1s';",
            f"ALTER TABLE {table()} ADD COLUMN flag_{i} boolean;",
            f"CREATE INDEX CONCURRENTLY idx_tx_{i} ON {table()} (flag_{i});",
            "COMMIT;",
            "SET lock_timeout = '2s';",  # SET LOCAL ended with the transaction
        ],
        lambda i: ["SELECT set_config('lock_timeout', '2s', false);"],
        lambda i: [f"CREATE TABLE app.copy_{i} AS SELECT * FROM {table()} WHERE false;"],
        lambda i: [f"ALTER TABLE {table()} ADD COLUMN seq_{i} bigserial;"],
        lambda i: [f"ALTER TABLE {table()} ALTER COLUMN note_{i % 90} TYPE varchar(300);"],
    ]
    weights = [4, 12, 6, 4, 16, 14, 8, 4, 4, 2, 6, 10] + [1] * 22
    while n < statements:
        for sql in rng.choices(blocks, weights)[0](n):
            out.append(sql)
            n += 0 if sql.startswith("--") else 1
    return "\n".join(out) + "\n"


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def decode_with_gc(raw: str) -> int:
    return len(json.loads(raw)["stmts"])


def decode_gc_paused(raw: str) -> int:
    """Decode with the collector paused, and free the tree before it resumes (as lint does)."""
    gc.disable()
    try:
        return len(json.loads(raw)["stmts"])
    finally:
        gc.enable()


def paused(fn: Callable[[], int]) -> int:
    """Run ``fn`` with the collector paused; its tree is freed before the collector resumes."""
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


def in_process(text: str, count: int, repeat: int) -> dict[str, float]:
    raw = pg.parse_sql_json(text)
    source = Source("corpus.sql", text)
    return {
        "parse_sql_json (C parser -> JSON text)": best(lambda: pg.parse_sql_json(text), repeat),
        "json.loads, gc running": best(lambda: decode_with_gc(raw), repeat),
        "json.loads, gc paused (the full-tree path)": best(lambda: decode_gc_paused(raw), repeat),
        "parse_sql (pglast Python AST objects)": best(lambda: len(pg.parse_sql(text)), repeat),
        "parse_sql_protobuf (bytes only, not decoded)": best(
            lambda: pg.parse_sql_protobuf(text), repeat
        ),
        "full tree: parse + decode all (engine.parse)": best(
            lambda: paused(lambda: len(parse(source))), repeat
        ),
        "cut the JSON at statements alone (msgspec, tree.cut)": best(
            lambda: paused(lambda: len(tree.cut(raw))), repeat
        ),
        "fast: parse + cut at statements (engine._split)": best(
            lambda: len(_split(source).statements), repeat
        ),
        "fast: parse + cut, only the kinds read (expand)": best(
            lambda: len(_split(source, "expand").statements), repeat
        ),
        "fast: parse + cut + decode what rules read": best(
            lambda: paused(lambda: len(lazy_statements(source, "expand"))), repeat
        ),
        "lint_text, full tree": best(
            lambda: lint_text(text, "corpus.sql", phase="expand", full_tree=True), repeat
        ),
        "lint_text, fast path (the default)": best(
            lambda: lint_text(text, "corpus.sql", phase="expand"), repeat
        ),
    }


def wall(
    cmds: dict[str, list[str]], repeat: int, env: dict[str, str]
) -> dict[str, list[tuple[float, float]]]:
    """(wall seconds, CPU seconds user+sys) per run of each command, runs interleaved so that
    every command meets the same load on a shared machine; CPU time is the steadier number."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    for _ in range(repeat):
        for name, cmd in cmds.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(
                cmd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
                cwd=ROOT,
                env=env,
            )
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            out[name].append((elapsed, cpu))
    return out


def profile(text: str) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    lint_text(text, "corpus.sql", phase="expand")
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


def machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores (nproc), {cpu}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--profile", action="store_true", help="print the cProfile top of lint_text"
    )
    parser.add_argument(
        "--json-only",
        action="store_true",
        help="skip the default-output runs (squawk's tty reporter takes tens of seconds)",
    )
    args = parser.parse_args()

    text = corpus(args.statements)
    count = len(pg.split(text))
    print(f"machine: {machine()}")
    print(f"corpus: {count} statements, {len(text.encode()) / 1e6:.2f} MB")
    findings = lint_text(text, "corpus.sql", phase="expand")
    print(f"nonstop findings: {len(findings)}")

    print("\nin-process, best of", args.repeat)
    for name, seconds in in_process(text, count, args.repeat).items():
        print(f"  {name:<48} {seconds * 1000:8.1f} ms  {count / seconds:>10,.0f} stmt/s")

    if args.profile:
        print(profile(text))

    if not SQUAWK.exists() and shutil.which("squawk") is None:
        print("\nsquawk not installed (pip install squawk-cli): end-to-end comparison skipped")
        return
    squawk = str(SQUAWK) if SQUAWK.exists() else "squawk"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.sql"
        path.write_text(text, encoding="utf-8")
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pyc")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        lint_cli = "from nonstop.cli.migrate_lint import lint; lint()"
        # the same command through click (as before the plain JSON lint skipped it), exiting
        # as the program does (gc.freeze): the same-run baseline of the start-up change
        click_cli = (
            "import gc, sys; from nonstop.cli.app import run\n"
            "try: run(sys.argv[1:])\nfinally: gc.freeze()"
        )
        via_click = [sys.executable, "-c", click_cli, "migrate", "lint"]
        # the full-tree path end to end: the same CLI with lint_source(full_tree=True)
        full_cli = (
            "import functools, nonstop.migrate.lint.engine as e; "
            "e.lint_source = functools.partial(e.lint_source, full_tree=True); " + lint_cli
        )
        args_json = ["--format", "json", "--phase", "expand", str(path)]
        # the command a user runs: the console script, through the whole CLI
        ours = [str(Path(sys.executable).parent / "nonstop"), "migrate", "lint"]
        one = Path(tmp) / "one.sql"
        one.write_text("CREATE INDEX orders_customer_idx ON orders (customer_id);\n")
        wall({"warm-up": [*ours, *args_json]}, 1, env)  # writes the .pyc files
        runs = wall(
            {
                "nonstop --format json": [*ours, *args_json],
                "squawk --reporter json": [squawk, "--reporter", "json", str(path)],
                "nonstop json, full tree": [sys.executable, "-c", full_cli, *args_json],
                "nonstop json via click": [*via_click, *args_json],
                "python + imports alone": [sys.executable, "-c", _IMPORTS],
                "nonstop, 1-statement file": [*ours, "--format", "json", str(one)],
                "1-statement, via click": [*via_click, "--format", "json", str(one)],
                "squawk, 1-statement file": [squawk, "--reporter", "json", str(one)],
            },
            args.repeat,
            env,
        )
        # default outputs: squawk's tty reporter takes tens of seconds here, so one run each
        runs |= (
            {}
            if args.json_only
            else wall(
                {
                    "nonstop (human, default)": [*ours, "--phase", "expand", str(path)],
                    "squawk (tty, default)": [squawk, str(path)],
                },
                1,
                env,
            )
        )
    print(
        f"\nend to end, fresh process, output to /dev/null (runs interleaved, {args.repeat} each)"
    )
    print(f"  {'':<26} {'wall best':>10} {'wall median':>12} {'CPU best':>9}  stmt/s (wall best)")
    for name, times in runs.items():
        walls, cpus = [w for w, _ in times], [c for _, c in times]
        print(
            f"  {name:<26} {min(walls):9.3f}s {statistics.median(walls):11.3f}s {min(cpus):8.3f}s"
            f"  {count / min(walls):>10,.0f}"
        )

    def ratio(ours: str, theirs: str, index: int, pick: Callable[[list[float]], float]) -> float:
        return pick([t[index] for t in runs[theirs]]) / pick([t[index] for t in runs[ours]])

    pairs = {
        "json": ("nonstop --format json", "squawk --reporter json"),
        "default": ("nonstop (human, default)", "squawk (tty, default)"),
        "fast/full tree, json": ("nonstop --format json", "nonstop json, full tree"),
        "without/with click, json": ("nonstop --format json", "nonstop json via click"),
        "without/with click, 1 statement": ("nonstop, 1-statement file", "1-statement, via click"),
    }
    for label, pair in pairs.items():
        if pair[0] not in runs:
            continue
        print(
            f"  throughput ratio {label}: wall {ratio(*pair, 0, min):.2f}x best, "
            f"{ratio(*pair, 0, statistics.median):.2f}x median; CPU {ratio(*pair, 1, min):.2f}x "
            f"best, {ratio(*pair, 1, statistics.median):.2f}x median"
        )


if __name__ == "__main__":
    main()
