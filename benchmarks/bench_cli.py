"""Whole-process time of the ``nonstop`` command against ``python -c pass``, in the same run.

    .venv/bin/python benchmarks/bench_cli.py [--runs 15] [--before REV] [--hyperfine]

Starts a real agent (``nonstop up --detach``) in a temporary project with the bundled sample
app, deploys one release, then times fresh processes of:

* ``python -c pass``: the interpreter alone, the baseline of the run; ``python -c 'import
  click'``: the floor of any click command;
* ``nonstop --help``; ``nonstop status`` and ``status --json`` (asking the running agent);
* ``nonstop migrate lint`` on a one-statement file.

Runs are interleaved (every command meets the same load on a shared machine); the script
prints the median and best wall time, the median CPU time (user+sys of the child) and each
median's ratio to the baseline's. ``--before REV`` adds the same commands from the sources of
git revision REV (run from a temporary copy of its ``src/``), so the change is measured in
the same run too. ``--hyperfine`` times the same commands again with hyperfine (apt package
``hyperfine``; ``scripts/install-system-deps.sh --bench``) as a cross-check.

Bytecode caching is on (a temporary ``PYTHONPYCACHEPREFIX``, after a warm-up run of each
command), as an installed package has its ``.pyc`` files; otherwise every run would compile
nonstop's modules again (``PYTHONDONTWRITEBYTECODE`` is set in some environments).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from bench_lint import machine, wall

ROOT = Path(__file__).resolve().parent.parent
NONSTOP = Path(sys.executable).parent / "nonstop"
GOAL = 0.12
"""Seconds of wall time for `--help` and `status` (median)."""
ENTRY = (
    "import sys; sys.path.insert(0, {src!r}); from nonstop.cli.main import main; "
    "sys.argv[0] = 'nonstop'; sys.exit(main())"
)
"""The console script's code, with an older revision's sources first on the path."""

CONFIG = """\
[app]
name = "bench"
command = "{python} app.py --port {{port}}"
replicas = 2

[health]
path = "/health"
interval = "100ms"
start_period = "10s"

[router]
listen = "127.0.0.1:{port}"

[watch]
duration = "1s"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_project(folder: Path) -> Path:
    project = folder / "shop"
    project.mkdir()
    app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
    (project / "app.py").write_text(app)
    config = CONFIG.format(python=sys.executable, port=free_port())
    (project / "nonstop.toml").write_text(config)
    (project / "0001_add.sql").write_text("ALTER TABLE users ADD COLUMN note text;\n")
    return project


def nonstop(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(NONSTOP), *args], env=env, check=True, stdout=subprocess.DEVNULL)


def old_sources(rev: str, folder: Path) -> Path:
    """``src/`` of git revision ``rev``, unpacked under ``folder``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    target = folder / f"rev-{rev}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def commands(project: Path, before: Path | None) -> dict[str, list[str]]:
    lint = str(project / "0001_add.sql")
    args = {
        "nonstop --help": ["--help"],
        "nonstop status": ["status"],
        "nonstop status --json": ["status", "--json"],
        "nonstop migrate lint (1 statement)": ["migrate", "lint", lint],
    }
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import click'": [sys.executable, "-c", "import click"],
    }
    cmds |= {name: [str(NONSTOP), *a] for name, a in args.items()}
    if before is not None:
        run_old = [sys.executable, "-c", ENTRY.format(src=str(before))]
        cmds |= {f"{name} [before]": [*run_old, *a] for name, a in args.items()}
    return cmds


def warm_up(cmds: dict[str, list[str]], env: dict[str, str]) -> None:
    """One run of each (bytecode written, files in the page cache), checking it works: the
    lint finds its one problem (exit 1), every other command exits 0."""
    for name, cmd in cmds.items():
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != (1 if "lint" in name else 0):
            raise SystemExit(f"{name}: exit {done.returncode}\n{done.stdout}{done.stderr}")


def report(runs: dict[str, list[tuple[float, float]]]) -> None:
    base = statistics.median(w for w, _ in runs["python -c pass"])
    print(f"{'command':44} {'median':>8} {'best':>8} {'CPU':>8} {'x pass':>7}  goal")
    for name, samples in runs.items():
        med = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        best = min(w for w, _ in samples)
        goal = ""
        if name in ("nonstop --help", "nonstop status"):
            goal = f"<= {GOAL} s: {'met' if med <= GOAL else 'NOT met'}"
        print(
            f"{name:44} {med * 1000:6.1f}ms {best * 1000:6.1f}ms {cpu * 1000:6.1f}ms "
            f"{med / base:6.2f}x  {goal}"
        )


def hyperfine(cmds: dict[str, list[str]], runs: int, env: dict[str, str], folder: Path) -> None:
    """The same commands timed by hyperfine (no shell; its own warm-up), medians."""
    if shutil.which("hyperfine") is None:
        print("hyperfine: not installed (scripts/install-system-deps.sh --bench)")
        return
    out = folder / "hyperfine.json"
    argv = [
        "hyperfine",
        "-N",
        "-i",
        "--warmup",
        "2",
        "--runs",
        str(runs),
        "--export-json",
        str(out),
    ]
    for name, cmd in cmds.items():
        argv += ["--command-name", name, shlex.join(cmd)]
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    results = json.loads(out.read_text())["results"]
    base = next(r["median"] for r in results if r["command"] == "python -c pass")
    print("\nhyperfine (median, mean ± stddev, x pass):")
    for r in results:
        print(
            f"  {r['command']:44} {r['median'] * 1000:6.1f}ms "
            f"{r['mean'] * 1000:6.1f} ± {r['stddev'] * 1000:4.1f}ms {r['median'] / base:6.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (>= 7)")
    parser.add_argument("--before", metavar="REV", help="also time the commands of this git rev")
    parser.add_argument("--hyperfine", action="store_true", help="cross-check with hyperfine")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        folder = Path(tmp)
        project = make_project(folder)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"PYTHONPYCACHEPREFIX": str(folder / "pyc"), "NONSTOP_PROJECT": str(project)}
        before = old_sources(options.before, folder) if options.before else None
        nonstop(env, "up", "--detach")
        try:
            nonstop(env, "deploy", "v1")
            cmds = commands(project, before)
            warm_up(cmds, env)
            print(f"{machine()}; load average {os.getloadavg()[0]:.2f} before the runs")
            runs = wall(cmds, max(options.runs, 7), env)
            report(runs)
            print(f"load average {os.getloadavg()[0]:.2f} after the runs")
            if options.hyperfine:
                hyperfine(cmds, max(options.runs, 7), env, folder)
        finally:
            nonstop(env, "down")


if __name__ == "__main__":
    main()
