"""Run every benchmark in this folder, one after the other (`make bench`).

Each script prints its own results; record them, with the command and the machine, in
docs/benchmarks.md. Pass names to run only some: `python benchmarks/run_all.py deploy lint`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
    failed = []
    for script in scripts:
        print(f"==> {script.name}", flush=True)
        began = time.monotonic()
        code = subprocess.call([sys.executable, str(script)])
        print(f"<== {script.name}: exit {code} after {time.monotonic() - began:.0f}s", flush=True)
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
