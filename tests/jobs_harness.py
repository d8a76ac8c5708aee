"""Real queue workers under deploys: a Redis server, job modules for Celery, RQ and Dramatiq,
an enqueuer at a steady rate and a ledger of every job, kept in Redis by the jobs themselves.

Each job appends ``start <id> <instance> <pid> <time>`` to the Redis list ``ledger`` when it
begins and ``done ...`` when it ends, so the count of each per job id says whether it was lost
(no ``done``) or run twice (two ``start``), whatever the workers or nonstop did in between.
Used by tests/e2e/test_queue_workers.py and benchmarks/bench_workers.py."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEDGER = "ledger"

# The job, the same for every library: note the start, sleep, note the end.
JOB = """
import os, time
import redis
_ledger = redis.Redis.from_url(os.environ["REDIS_URL"])

def _note(what, job_id):
    me = os.environ.get("NONSTOP_INSTANCE", "-")
    _ledger.rpush("ledger", f"{what} {job_id} {me} {os.getpid()} {time.time()}")

def run(job_id, seconds):
    _note("start", job_id)
    time.sleep(seconds)
    _note("done", job_id)
"""

MODULES = {
    "rq": JOB,
    "celery": JOB
    + """
from celery import Celery
app = Celery("jobs", broker=os.environ["REDIS_URL"])
app.conf.update(
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_acks_late=os.environ.get("CELERY_ACKS_LATE") == "1",
)

@app.task(name="work")
def work(job_id, seconds):
    run(job_id, seconds)
""",
    "dramatiq": JOB
    + """
import dramatiq
from dramatiq.brokers.redis import RedisBroker
dramatiq.set_broker(RedisBroker(url=os.environ["REDIS_URL"]))

@dramatiq.actor(actor_name="work", max_retries=0, time_limit=3_600_000)
def work(job_id, seconds):
    run(job_id, seconds)
""",
}


CELERY_QUIET = (
    "{python} -m celery -A jobs control cancel_consumer celery "
    "-d $NONSTOP_INSTANCE@$(hostname) --timeout 10"
)
"""Celery's quiet step as docs/workers.md recommends it: this instance's node (named after
the instance, ``-n``) stops consuming; the command exits 0 once the worker replied."""


def celery_role(python: str, longest: float) -> str:
    """The ``[processes.worker]`` lines that make Celery hold nothing at its stop signal
    (docs/workers.md): the quiet step, and a grace one second above the longest job."""
    return (
        f'quiet_command = "{CELERY_QUIET.format(python=python)}"\n'
        f'quiet_grace = "{longest + 1:g}s"\n'
    )


def worker_command(library: str, python: str, stop_timeout: float, slots: int) -> str:
    """The worker command of ``library`` with ``slots`` jobs at once per instance. Celery's
    node is named after the instance (so a quiet step reaches it alone), takes one message per
    free pool process (``--prefetch-multiplier 1 -O fair``: nothing waits in its buffer)."""
    if library == "rq":
        return f"{python} -m rq.cli worker --url $REDIS_URL --path . jobs"
    if library == "celery":
        return (
            f"{python} -m celery -A jobs worker -c {slots} --pool prefork -Q celery -l warning "
            "-O fair --prefetch-multiplier 1 -n $NONSTOP_INSTANCE@%h"
        )
    shutdown_ms = int(stop_timeout * 1000 * 0.8)
    return (
        f"{python} -m dramatiq jobs --processes 1 --threads {slots} "
        f"--worker-shutdown-timeout {shutdown_ms}"
    )


# -- Redis ------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    binary: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with (self.directory / "redis.log").open("ab") as log:
            self._spawn(log)
        self._wait_ready()

    def _spawn(self, log: Any) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def _wait_ready(self) -> None:
        assert self.process is not None
        client = self.client()
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(Exception):
                if client.ping():
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-500:]
                raise RuntimeError(f"redis-server did not start: {log}")
            time.sleep(0.05)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def redis_server(binary: str, port: int) -> Iterator[RedisServer]:
    directory = Path(tempfile.mkdtemp(prefix="nonstop-redis-"))
    server = RedisServer(binary, port, directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


# -- enqueue ----------------------------------------------------------------------------------


def enqueuer(library: str, url: str) -> Callable[[str, float], None]:
    """A function that enqueues one job (id, seconds) for ``library``'s workers."""
    if library == "rq":
        import redis
        from rq import Queue

        queue = Queue("jobs", connection=redis.Redis.from_url(url))
        return lambda job_id, seconds: (
            queue.enqueue("jobs.run", job_id, seconds, job_id=job_id, job_timeout=3600) and None
        )
    if library == "celery":
        from celery import Celery

        app = Celery("enqueue", broker=url)
        return lambda job_id, seconds: app.send_task("work", args=[job_id, seconds]) and None
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url)
    return lambda job_id, seconds: broker.enqueue(
        dramatiq.Message(
            queue_name="default", actor_name="work", args=(job_id, seconds), kwargs={},
            options={},
        )
    ) and None  # fmt: skip


def durations(longest: float, seed: int = 7) -> Iterator[float]:
    """Job lengths from 0.1 s to ``longest``: most short, one in ten long (uniform)."""
    rng = random.Random(seed)
    while True:
        yield round(rng.uniform(0.1, longest) if rng.random() < 0.1 else 0.1, 3)


@dataclass
class SteadyLoad:
    """Enqueue ``rate`` jobs a second on a thread until stopped; remembers every id."""

    enqueue: Callable[[str, float], None]
    rate: float
    longest: float
    prefix: str = "job"
    sent: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> SteadyLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        began, lengths = time.monotonic(), durations(self.longest)
        while not self._stop.is_set():
            job_id = f"{self.prefix}-{len(self.sent) + 1}"
            try:
                self.enqueue(job_id, next(lengths))
                self.sent.append(job_id)
            except Exception as exc:  # counted: an enqueue that failed is no lost job
                self.errors.append(f"{job_id}: {exc}")
            due = began + len(self.sent) / self.rate
            self._stop.wait(max(0.0, due - time.monotonic()))


# -- the ledger -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    what: str
    job: str
    instance: str
    pid: int
    at: float


def read_ledger(client: Any) -> list[Entry]:
    entries = []
    for raw in client.lrange(LEDGER, 0, -1):
        what, job, instance, pid, at = raw.decode().split()
        entries.append(Entry(what, job, instance, int(pid), float(at)))
    return entries


@dataclass
class Verdict:
    sent: int
    done: int
    lost: list[str]
    twice: list[str]

    def __str__(self) -> str:
        return (
            f"{self.sent} jobs: {self.done} done, {len(self.lost)} lost, "
            f"{len(self.twice)} run twice"
        )


def judge(sent: list[str], entries: list[Entry]) -> Verdict:
    starts = Counter(e.job for e in entries if e.what == "start")
    done = Counter(e.job for e in entries if e.what == "done")
    lost = [job for job in sent if not done[job]]
    twice = [job for job in sent if starts[job] > 1 or done[job] > 1]
    return Verdict(len(sent), sum(1 for job in sent if done[job]), lost, twice)


def wait_all_done(client: Any, sent: list[str], timeout: float, library: str = "") -> list[Entry]:
    """Read the ledger until every sent job is done (or, for RQ, stranded in its intermediate
    queue: see :func:`stranded`) or ``timeout`` passed; returns the ledger."""
    deadline = time.monotonic() + timeout
    while True:
        entries = read_ledger(client)
        done = {e.job for e in entries if e.what == "done"}
        waiting = [job for job in sent if job not in done]
        if not waiting or time.monotonic() > deadline:
            return entries
        if set(waiting) <= set(stranded(client, library, waiting)):
            return entries
        time.sleep(0.2)


def alive(pid: int, instance: str) -> bool:
    """``pid`` still runs as a process of ``instance`` (its NONSTOP_INSTANCE): a pid the
    kernel handed to another process since (a new worker's horse, say) does not count."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, IndexError):
        return False
    mine = f"NONSTOP_INSTANCE={instance}\0".encode() in environ + b"\0"
    return mine and fields[0] not in ("Z", "X")


def project_files(root: Path, library: str) -> None:
    (root / "jobs.py").write_text(MODULES[library])


def configure_workers(
    project: Any,
    library: str,
    stop: float,
    shape: tuple[int, int],
    strategy: str,
    env: dict[str, str],
    role_extra: str = "",
) -> None:
    """The project of an e2e ``Project`` as a ``library`` worker role: ``shape`` is (replicas,
    jobs at once per instance), ``stop`` its stop timeout in seconds, ``env`` its environment
    (REDIS_URL at least); blue-green or rolling with a surge of one."""
    replicas, slots = shape
    pairs = ", ".join(f'{key} = "{value}"' for key, value in env.items())
    project.write_config(
        extra=f"""
[processes.worker]
command = "{worker_command(library, python(), stop, slots)}"
replicas = {replicas}
queue = "{library}"
stop_timeout = "{stop:g}s"
env = {{ {pairs} }}
readiness = {{ kind = "none", min_uptime = "1s" }}
{role_extra}
[strategy.rolling]
max_surge = 1
max_unavailable = 0
"""
    )
    config = project.root / "nonstop.toml"
    config.write_text(config.read_text().replace('kind = "bluegreen"', f'kind = "{strategy}"'))
    project_files(project.root, library)


def python() -> str:
    return os.environ.get("NONSTOP_TEST_PYTHON") or __import__("sys").executable


def whereabouts(client: Any, library: str, jobs: list[str]) -> list[str]:
    """Where RQ keeps each of ``jobs`` (its status, and whether it waits in the queue or in
    RQ's intermediate queue); for other libraries, just the ids."""
    if library != "rq":
        return jobs
    queued = {raw.decode() for raw in client.lrange("rq:queue:jobs", 0, -1)}
    moved = {raw.decode() for raw in client.lrange("rq:queue:jobs:intermediate", 0, -1)}
    found = []
    for job in jobs:
        status = client.hget(f"rq:job:{job}", "status")
        place = "queued" if job in queued else "intermediate" if job in moved else "nowhere"
        found.append(f"{job}: {status.decode() if status else 'no hash'}, {place}")
    return found


def stranded(client: Any, library: str, jobs: list[str]) -> list[str]:
    """The ones of ``jobs`` RQ left in its intermediate queue without starting them: a worker
    stopped while blocked in BLMOVE (see docs/workers.md)."""
    if library != "rq":
        return []
    moved = {raw.decode() for raw in client.lrange("rq:queue:jobs:intermediate", 0, -1)}
    return [job for job in jobs if job in moved]
