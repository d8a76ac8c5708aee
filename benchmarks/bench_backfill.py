"""Benchmark the keyset backfill of `nonstop migrate start` on a private PostgreSQL.

    .venv/bin/python benchmarks/bench_backfill.py [--rows 1000000] [--repeat 3]
        [--runs batch[:pause[:timeout]],...]

For each backfill configuration (``--runs``: batch size, pause, per-batch timeout), on a
fresh table of ``--rows`` users (with the dual-write trigger an expand migration installs, so
every backfilled row also fires it), measures in the same run:

* the application's latency (an app-like loop of point reads and point updates by primary key
  in its own connection): alone (half of ``--app-seconds`` just before the backfill, half
  just after), and during the backfill; and, paired, while the backfill is held between two
  batches for ``--interleave`` s every ``--interleave`` s of work (rows/s counts only the
  time it works), so that load from other processes weighs on both sides alike;
* the backfill: rows/s, the longest batch transaction, and the longest any of its transactions
  was seen holding locks by sampling pg_locks every few milliseconds from a third connection;
* the baseline: what a team does without a tool, one ``UPDATE users SET ...`` over the whole
  table, with the same app loop and sampler running.

Needs the PostgreSQL server binaries (initdb, pg_ctl); runs as root through the ``postgres``
user like the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from nonstop.config.units import parse_duration
from nonstop.migrate import runner
from nonstop.migrate.tempdb import TempPostgres, find_pg_bin

SCHEMA = """
DROP SCHEMA IF EXISTS nonstop CASCADE;
DROP TABLE IF EXISTS users;
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, email_lower text);
INSERT INTO users (email) SELECT 'User' || g || '@Example.ORG' FROM generate_series(1, {rows}) g;
CREATE OR REPLACE FUNCTION users_email_lower() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.email_lower := lower(NEW.email); RETURN NEW; END $$;
CREATE TRIGGER users_email_lower BEFORE INSERT OR UPDATE OF email ON users
  FOR EACH ROW EXECUTE FUNCTION users_email_lower();
"""
FILL = """-- nonstop: phase=backfill table=users key=id {options}
UPDATE users SET email_lower = lower(email)
 WHERE id BETWEEN :lo AND :hi AND email_lower IS DISTINCT FROM lower(email);
"""
NAIVE = "UPDATE users SET email_lower = lower(email)"


class AppLoop(threading.Thread):
    """Point read then point update of a random user, back to back, timing each query."""

    def __init__(self, url: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.url, self.rows = url, rows
        self.stop = threading.Event()
        self.phase = "during"
        """Label of the samples taken now; the interleaver flips it to "paused" and back."""
        self.by_phase: dict[str, list[float]] = {"during": [], "paused": []}
        self.errors = 0

    @property
    def latencies(self) -> list[float]:
        return self.by_phase["during"]

    def run(self) -> None:
        rng = random.Random(11)
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                key = rng.randint(1, self.rows)
                for query, args in (
                    ("SELECT email FROM users WHERE id = %s", (key,)),
                    ("UPDATE users SET email = email WHERE id = %s", (key,)),
                ):
                    phase, began = self.phase, time.perf_counter()
                    try:
                        cursor = conn.execute(query, args)
                        if cursor.description:
                            cursor.fetchall()
                    except psycopg.Error:
                        self.errors += 1
                    self.by_phase[phase].append(time.perf_counter() - began)


class LockSampler(threading.Thread):
    """Every ``interval`` s: which transactions of the worker hold locks (by xid), since when."""

    def __init__(self, url: str, application_name: str, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.url, self.app, self.interval = url, application_name, interval
        self.stop = threading.Event()
        self.seen: dict[str, list[float]] = {}
        self.samples = 0

    def run(self) -> None:
        query = (
            "SELECT l.transactionid::text FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE a.application_name = %s AND l.locktype = 'transactionid' "
            "AND l.mode = 'ExclusiveLock' AND l.granted"
        )
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                now = time.perf_counter()
                for (xid,) in conn.execute(query, (self.app,)).fetchall():
                    self.seen.setdefault(xid, [now, now])[1] = now
                self.samples += 1
                time.sleep(self.interval)

    @property
    def longest(self) -> float:
        """Longest span one transaction was seen holding its locks (a lower bound, +- 1 sample)."""
        return max((last - first for first, last in self.seen.values()), default=0.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


@dataclass
class Result:
    label: str
    rows: int
    seconds: float
    rows_per_s: float
    longest_batch_ms: float
    longest_lock_sampled_ms: float
    app_queries_before: int
    app_queries_during: int
    app_p50_before_ms: float
    app_p99_before_ms: float
    app_p50_during_ms: float
    app_p99_during_ms: float
    app_p99_ratio: float
    app_p99_paused_ms: float
    """p99 of the app while the backfill is held between batches (paired measurement)."""
    app_p99_paired_ratio: float
    app_max_before_ms: float
    app_max_during_ms: float
    app_errors: int
    load_average: float


def app_alone(url: str, rows: int, seconds: float) -> list[float]:
    loop = AppLoop(url, rows)
    loop.start()
    time.sleep(seconds)
    loop.stop.set()
    loop.join()
    return loop.latencies


class Interleaver:
    """Paired measurement: every ``window`` s of backfill, hold it for ``window`` s (sleeping
    in its progress callback, between two committed batches) while the app's samples are
    labelled "paused". Background load on a shared machine then weighs on both sides alike."""

    def __init__(self, app: AppLoop, window: float) -> None:
        self.app, self.window = app, window
        self.since = time.perf_counter()
        self.paused = 0.0

    def __call__(self, event: runner.Event) -> None:
        if not self.window or not isinstance(event, runner.BatchDone):
            return
        if time.perf_counter() - self.since >= self.window:
            self.app.phase = "paused"
            time.sleep(self.window)
            self.app.phase = "during"
            self.paused += self.window
            self.since = time.perf_counter()


def measure(
    label: str,
    url: str,
    rows: int,
    seconds: float,
    work: str,
    options: str,
    pause: float,
    interleave: float,
) -> Result:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA.format(rows=int(rows)))
        conn.execute("VACUUM ANALYZE users")
    # The sampler runs from the start, so its own load weighs on "before" and "during" alike.
    sampler = LockSampler(url, "nonstop-migrate" if work == "backfill" else "naive-update")
    sampler.start()
    before = app_alone(url, rows, seconds / 2)
    app = AppLoop(url, rows)
    app.start()
    time.sleep(0.2)
    began = time.perf_counter()
    longest_batch = 0.0
    interleaver = Interleaver(app, interleave if work == "backfill" else 0.0)
    if work == "backfill":
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "0002_fill.sql").write_text(FILL.format(options=options))
            summary = runner.run_backfill(
                runner.Target(directory=Path(folder), url=url, pause=pause), on_event=interleaver
            )
        done = summary.backfills[0]
        updated, longest_batch = done.rows, done.longest_batch_s
    else:
        with psycopg.connect(url, autocommit=True, application_name="naive-update") as conn:
            updated = conn.execute(NAIVE).rowcount
            longest_batch = time.perf_counter() - began
    took = time.perf_counter() - began - interleaver.paused
    app.stop.set()
    app.join()
    # Other work on a shared machine comes and goes: the baseline is the app alone just before
    # *and* just after, so a burst of background load does not land on one side only.
    before += app_alone(url, rows, seconds / 2)
    sampler.stop.set()
    sampler.join()
    p99_before, p99_during = percentile(before, 99), percentile(app.latencies, 99)
    p99_paused = percentile(app.by_phase["paused"], 99)
    return Result(
        label=label,
        rows=updated,
        seconds=round(took, 3),
        rows_per_s=round(updated / took),
        longest_batch_ms=round(longest_batch * 1000, 1),
        longest_lock_sampled_ms=round(sampler.longest * 1000, 1),
        app_queries_before=len(before),
        app_queries_during=len(app.latencies),
        app_p50_before_ms=round(percentile(before, 50) * 1000, 3),
        app_p99_before_ms=round(p99_before * 1000, 3),
        app_p50_during_ms=round(percentile(app.latencies, 50) * 1000, 3),
        app_p99_during_ms=round(p99_during * 1000, 3),
        app_p99_ratio=round(p99_during / p99_before, 2) if p99_before else 0.0,
        app_p99_paused_ms=round(p99_paused * 1000, 3),
        app_p99_paired_ratio=round(p99_during / p99_paused, 2) if p99_paused else 0.0,
        app_max_before_ms=round(max(before, default=0.0) * 1000, 3),
        app_max_during_ms=round(max(app.latencies, default=0.0) * 1000, 3),
        app_errors=app.errors,
        load_average=round(os.getloadavg()[0], 2),
    )


def machine(url: str) -> dict[str, str]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "postgres": server_version(url),
    }


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


WORST_OF = {"longest_batch_ms", "longest_lock_sampled_ms", "app_max_during_ms", "app_errors"}


def summary_row(label: str, runs: list[Result]) -> Result:
    """Median over repeats, except the worst-case columns (longest lock, app max): their max."""
    values: dict[str, float] = {}
    for name, kind in Result.__annotations__.items():
        if kind not in ("int", "float"):
            continue
        column = [float(getattr(r, name)) for r in runs]
        value = max(column) if name in WORST_OF else statistics.median(column)
        values[name] = int(value) if kind == "int" else round(value, 3)
    return Result(label=f"{label} (median of {len(runs)}, worst lock/max)", **values)  # type: ignore[arg-type]


def print_table(info: dict[str, str], results: list[Result]) -> None:
    print(
        f"machine: nproc={info['nproc']} cpu={info['cpu']} python={info['python']} "
        f"postgresql={info['postgres']}"
    )
    header = (
        "run",
        "rows",
        "s",
        "rows/s",
        "max batch ms",
        "max lock ms (sampled)",
        "app p50 ms before/during",
        "app p99 ms before/during",
        "app max ms before/during",
        "p99 ratio",
        "app p99 ms paused",
        "paired p99 ratio",
        "app errors",
        "load avg",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print(
            f"| {r.label} | {r.rows} | {r.seconds} | {r.rows_per_s} | {r.longest_batch_ms} | "
            f"{r.longest_lock_sampled_ms} | {r.app_p50_before_ms}/{r.app_p50_during_ms} | "
            f"{r.app_p99_before_ms}/{r.app_p99_during_ms} | "
            f"{r.app_max_before_ms}/{r.app_max_during_ms} | {r.app_p99_ratio} | "
            f"{r.app_p99_paused_ms} | {r.app_p99_paired_ratio} | {r.app_errors} | "
            f"{r.load_average} |"
        )


def main() -> None:
    # A TERM (timeout, Ctrl-C in a parent) still stops the private server in the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--runs",
        default="1000,1000:5ms,1000:0:100ms,5000,10000",
        help="batch[:pause[:timeout]],... one backfill configuration each",
    )
    parser.add_argument("--repeat", type=int, default=1, help="Repeat every run; print medians.")
    parser.add_argument("--app-seconds", type=float, default=8.0)
    parser.add_argument(
        "--interleave",
        type=float,
        default=0.25,
        help="Hold the backfill this long every this long, for the paired p99 (0: off).",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise SystemExit("initdb/pg_ctl not found: install PostgreSQL's server package")
    plans = []
    for run in args.runs.split(","):
        batch, pause, timeout = [*run.split(":"), "", ""][:3]
        options = f"batch={batch}" + (f" timeout={timeout}" if timeout else "")
        label = f"backfill {options} pause={pause or '0'}"
        plans.append((label, "backfill", options, parse_duration(pause or "0")))
    plans.append(("baseline: one UPDATE", "naive", "", 0.0))
    root = Path(tempfile.mkdtemp(prefix="nonstop-bench-pg-"))
    server = TempPostgres(root, initdb, pg_ctl)
    results: dict[str, list[Result]] = {label: [] for label, *_ in plans}
    try:
        server.start()
        info = machine(server.url)
        for _ in range(args.repeat):  # round robin, so background load spreads over every run
            for label, work, options, pause in plans:
                results[label].append(
                    measure(
                        label,
                        server.url,
                        args.rows,
                        args.app_seconds,
                        work,
                        options,
                        pause,
                        args.interleave,
                    )
                )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    every = [r for runs in results.values() for r in runs]
    medians = [summary_row(label, runs) for label, runs in results.items()]
    if args.json:
        print(
            json.dumps(
                {
                    "machine": info,
                    "runs": [asdict(r) for r in every],
                    "medians": [asdict(r) for r in medians],
                },
                indent=2,
            )
        )
        return
    print_table(info, every)
    print()
    print_table(info, medians)
    base = medians[-1]
    for m in medians[:-1]:
        print(
            f"{m.label}: {m.rows_per_s / base.rows_per_s:.2f}x the rows/s of one UPDATE, "
            f"longest lock {base.longest_batch_ms / max(m.longest_batch_ms, 0.001):.0f}x shorter, "
            f"app max latency {base.app_max_during_ms / max(m.app_max_during_ms, 0.001):.0f}x "
            f"lower, app p99 {m.app_p99_ratio}x its baseline (one UPDATE: {base.app_p99_ratio}x), "
            f"paired p99 ratio {m.app_p99_paired_ratio}x"
        )


if __name__ == "__main__":
    main()
