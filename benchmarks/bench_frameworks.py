"""Lint of N generated Alembic revisions, whole process, against Alembic rendering them alone.

    .venv/bin/python benchmarks/bench_frameworks.py [--revisions 200] [--repeat 3]

Three timings, each the median of --repeat runs of a fresh process:
  render   `python -m alembic upgrade heads --sql` (what any offline lint has to pay)
  lint     `nonstop migrate lint PROJECT --no-cache --json` (render per operation + lint)
  relint   `nonstop migrate lint PROJECT --json` with nothing changed (cache hit)
  startup  `nonstop migrate lint --list-rules` (the CLI's start-up: imports, no work)
Goals: lint / render <= 1.2; relint <= 0.2 s. Bytecode caching on (PYTHONPYCACHEPREFIX in the
temporary directory), after one warm-up run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "migrate_frameworks" / "alembic_project"
NONSTOP = [str(Path(sys.executable).parent / "nonstop")]

BODY = """    op.add_column("t{i}", sa.Column("c{i}", sa.Text))
    op.create_index("t{i}_c{i}", "t{i}", ["c{i}"])
    with op.get_context().autocommit_block():
        op.create_index("t{i}_d{i}", "t{i}", ["c{i}"], postgresql_concurrently=True)
"""


def make_project(root: Path, count: int) -> Path:
    project = root / "alembic_project"
    shutil.copytree(SAMPLE, project)
    versions = project / "migrations" / "versions"
    for old in versions.glob("*.py"):
        old.unlink()
    for i in range(1, count + 1):
        down = f'"{i - 1:04d}"' if i > 1 else "None"
        body = BODY.format(i=i)
        if i == 1:
            body = "".join(
                f'    op.create_table("t{j}", sa.Column("id", sa.BigInteger, primary_key=True))\n'
                for j in range(1, count + 1)
            )
        (versions / f"{i:04d}_r.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f'revision = "{i:04d}"\ndown_revision = {down}\n\n\n'
            f"def upgrade() -> None:\n{body}"
        )
    return project


ENV = dict(os.environ)


CPU: dict[int, float] = {}  # id of a timing list -> its CPU seconds


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of one run; its CPU seconds (user+sys, all child processes) go to
    ``timed.cpu``."""
    start, cpu = time.perf_counter(), _cpu()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    took = time.perf_counter() - start
    timed.cpu = _cpu() - cpu  # type: ignore[attr-defined]
    if proc.returncode not in (0, 1):  # 1: findings (the generated revisions have some)
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--revisions", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        # bytecode caching on, as for an installed package (some environments set
        # PYTHONDONTWRITEBYTECODE, which would compile every module on every start)
        ENV["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pyc")
        ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        project = make_project(Path(tmp), args.revisions)
        timed([*NONSTOP, "migrate", "lint", "--list-rules"], project)  # warm the bytecode
        render_cmd = [sys.executable, "-m", "alembic", "upgrade", "heads", "--sql"]
        lint_cmd = [*NONSTOP, "migrate", "lint", str(project), "--json"]
        render, lint, relint, startup = [], [], [], []
        cpu: dict[str, list[float]] = {"render": [], "lint": [], "relint": [], "startup": []}
        for _ in range(args.repeat):
            startup.append(timed([*NONSTOP, "migrate", "lint", "--list-rules"], project))
            cpu["startup"].append(timed.cpu)  # type: ignore[attr-defined]
            render.append(timed(render_cmd, project))
            cpu["render"].append(timed.cpu)  # type: ignore[attr-defined]
            lint.append(timed([*lint_cmd, "--no-cache"], project))
            cpu["lint"].append(timed.cpu)  # type: ignore[attr-defined]
        timed(lint_cmd, project)  # fill the cache
        for _ in range(args.repeat):
            relint.append(timed(lint_cmd, project))
            cpu["relint"].append(timed.cpu)  # type: ignore[attr-defined]
        # the same re-lint inside one process: the cost of nonstop's own code, no interpreter
        # start and no CLI imports
        inproc = subprocess.run(
            [
                sys.executable,
                "-c",
                "import time, pathlib; from nonstop.migrate.frameworks import detect, "
                "lint_project; from nonstop.migrate.lint import LintOptions; "
                f"p = detect(pathlib.Path({str(project)!r}), None, None); "
                f"c = pathlib.Path({str(project)!r}) / '.nonstop/cache/lint'; "
                "lint_project(p, LintOptions(), cache_dir=c); t = time.perf_counter(); "
                "lint_project(p, LintOptions(), cache_dir=c); "
                "print(time.perf_counter() - t)",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=ENV,
        )
    load_end = os.getloadavg()[0]
    r, li, rl, st = (statistics.median(x) for x in (render, lint, relint, startup))
    c = {key: statistics.median(values) for key, values in cpu.items()}
    print(
        f"revisions: {args.revisions}, repeat: {args.repeat} (medians); "
        f"load average {load_start:.1f} at the start, {load_end:.1f} at the end"
    )
    print(f"alembic upgrade --sql (render alone): {r:.2f} s")
    print(f"nonstop migrate lint --no-cache:      {li:.2f} s  ratio {li / r:.2f}x (goal <= 1.2x)")
    print(f"nonstop migrate lint, cache hit:      {rl:.2f} s  (goal <= 0.2 s)")
    print(f"  of which lint_project, in process:  {float(inproc.stdout):.3f} s")
    print(f"nonstop migrate lint --list-rules:    {st:.2f} s  (CLI start-up alone)")
    print(f"lint minus CLI start-up:              {li - st:.2f} s  ratio {(li - st) / r:.2f}x")
    print(
        f"CPU (user+sys): render {c['render']:.2f} s, lint {c['lint']:.2f} s "
        f"(ratio {c['lint'] / c['render']:.2f}x), re-lint {c['relint']:.2f} s, "
        f"start-up {c['startup']:.2f} s"
    )


if __name__ == "__main__":
    main()
