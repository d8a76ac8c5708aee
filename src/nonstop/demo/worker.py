"""The sample app's worker role: takes jobs from a directory queue, one at a time.

Standard library only, like the sample app (``nonstop demo`` copies it next to it). A job is a
file in ``$JOBS_DIR/pending`` holding its length in seconds; a worker claims one by renaming
it into ``running/`` (atomic: two workers never claim the same file), sleeps that long, and
writes ``done/<job>.<instance>``. So the ``done`` directory is a ledger: a job with no entry was
lost, one with two ran twice.

Signals, as a well-behaved queue worker handles them (docs/workers.md): SIGTSTP (the role's
quiet signal) stops taking jobs; SIGTERM stops taking jobs and exits once the job in hand is
done (a sleep interrupted by a signal resumes, so the job runs its full length).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

POLL = 0.05


class Worker:
    def __init__(self, jobs: Path, instance: str) -> None:
        self.pending, self.running, self.done = jobs / "pending", jobs / "running", jobs / "done"
        for directory in (self.pending, self.running, self.done):
            directory.mkdir(parents=True, exist_ok=True)
        self.instance = instance.replace(":", "_")
        self.intake = True
        self.stopping = False

    def quiet(self, *_: object) -> None:
        self.intake = False

    def stop(self, *_: object) -> None:
        self.intake, self.stopping = False, True

    def claim(self) -> Path | None:
        for entry in sorted(self.pending.iterdir()):
            target = self.running / entry.name
            try:
                os.rename(entry, target)
            except FileNotFoundError:  # another worker took it first
                continue
            return target
        return None

    def run(self) -> int:
        while not self.stopping:
            job = self.claim() if self.intake else None
            if job is None:
                time.sleep(POLL)
                continue
            time.sleep(float(job.read_text() or "0.1"))
            (self.done / f"{job.name}.{self.instance}").write_text(f"{time.time()}\n")
            job.unlink()
        return 0


def main() -> int:
    worker = Worker(
        Path(os.environ.get("JOBS_DIR", "jobs")), os.environ.get("NONSTOP_INSTANCE", "local")
    )
    signal.signal(signal.SIGTSTP, worker.quiet)
    signal.signal(signal.SIGTERM, worker.stop)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
