"""A Django app's expand migration deployed under load: failed requests and the locks it took.

    .venv/bin/python benchmarks/bench_django_deploy.py [--rps 200] [--rows 200000] [--runs 3]
        [--starve SECONDS] [--connections 100]

Each run: a private PostgreSQL, the Django web shop of tests/migrate_frameworks/django_web
(every request INSERTs into shop_customer and reads the row back) as release v1 with
``--rows`` customers, then ``nonstop deploy v2`` while the load generator sends ``--rps``
requests/s. v2 brings migration 0002 (expand: ``AddField`` of a nullable column, then
``AddIndexConcurrently``) and 0003 (contract: drops a column v1 still writes).

Measured, per run:
  requests      scheduled, failed (any non-2xx, timeout or transport error), latency p99/max.
                The generator keeps up to ``--connections`` requests in flight (100, as
                `nonstop verify`); a request it could not send within 1 s of its due time
                (every connection waiting on a slow answer, or the generator starved of CPU)
                is "not sent", shown apart: it never reached the router. With 1000 each
                request is sent when due and waits, and an overloaded app shows as timeouts
                (over 5 s) instead.
  locks         pg_locks sampled every 20 ms from a separate connection: for each lock on
                shop_customer or the new index, how long it was held (granted) or waited for,
                by mode. "Blocking" modes are those that conflict with the app's INSERTs and
                SELECTs (ROW EXCLUSIVE, ACCESS SHARE): SHARE and stronger; SHARE UPDATE
                EXCLUSIVE (the concurrent index build) blocks neither. A lock seen in one sample
                only is reported as "< 20 ms".
  contract      `nonstop migrate complete` while v1 is warm: refused (exit 1) or not
  server log    with log_statement = ddl, log_min_duration_statement = 50 ms, log_lock_waits =
                on and deadlock_timeout = 100 ms (ALTER SYSTEM, reloaded): each schema
                statement the migration ran, with its duration when 50 ms or more (an upper
                bound of how long it held its lock: each runs in its own transaction, the
                migration being atomic = False), and every lock wait longer than 100 ms, from
                any session (the app's included). Logging every statement of the app instead
                slows the server enough to fail requests on a loaded machine.
  health        the router's failed active health checks (Caddy's log, per instance): how often
                an instance was too slow to answer /health within the health timeout. While
                they leave no instance in rotation the router routes to all of them (panic
                mode, decision 0570) instead of answering 503.
``--starve S``: as the deploy starts, every process of the running instances runs only 0.1 s
of each second for S seconds (SIGSTOP 0.9 s, SIGCONT 0.1 s): what a machine starved of CPU
does to the app, made repeatable. Requests and health checks queue; answers come late and
few. The router's health checks (every 0.5 s, 1 s timeout, 2 failures) mark every instance
down within about 2 s, and the requests sent meanwhile must be answered late, not fail.
Also the lock_timeout evidence: Django runs under PGOPTIONS lock_timeout (2 s, the default of
[migrations] lock_timeout), so a migration that waited longer for a lock would have failed.
Goals: 0 failed requests, no blocking lock held or waited for > 2 s, contract refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from e2e.harness import AgentProcess, Project, free_port  # noqa: E402
from e2e.test_bluegreen import BackgroundLoad, first_deploy  # noqa: E402
from e2e.test_migrations_deploy_django import django_shop, write_release_2  # noqa: E402
from nonstop.loadgen import LoadGenerator  # noqa: E402
from nonstop.migrate.tempdb import CANDIDATE_BIN_DIRS, TempPostgres  # noqa: E402

BLOCKING = {"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}
LOCKS = """
SELECT l.pid, l.mode, l.granted, c.relname
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
WHERE l.locktype = 'relation' AND c.relname IN ('shop_customer', 'customer_name_idx')
  AND l.pid <> pg_backend_pid()
"""


@dataclass
class LockSampler:
    """Polls pg_locks; each (pid, mode, relation, granted) seen in consecutive samples is one
    interval, from its first to its last sighting."""

    url: str
    every: float = 0.02
    open: dict[tuple[int, str, str, bool], tuple[float, float]] = field(default_factory=dict)
    done: list[tuple[str, str, bool, float]] = field(default_factory=list)  # mode, rel, granted
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                now = time.perf_counter()
                seen = {(r[0], r[1], r[3], r[2]) for r in conn.execute(LOCKS).fetchall()}
                for key in list(self.open):
                    if key not in seen:
                        self._close(key)
                for key in seen:
                    first = self.open.get(key, (now, now))[0]
                    self.open[key] = (first, now)
                time.sleep(self.every)
        for key in list(self.open):
            self._close(key)

    def _close(self, key: tuple[int, str, str, bool]) -> None:
        first, last = self.open.pop(key)
        self.done.append((key[1], key[2], key[3], last - first))

    def longest(self) -> dict[tuple[str, bool], float]:
        out: dict[tuple[str, bool], float] = {}
        for mode, _, granted, seconds in self.done:
            out[(mode, granted)] = max(out.get((mode, granted), 0.0), seconds)
        return out


# default log_line_prefix '%m [%p] ': a statement logged by log_statement, and later its
# duration on a line of its own from the same process
_LINE = re.compile(
    r"\[(\d+)\] LOG:  (?:statement: ((?:ALTER|CREATE|DROP)[^\n]{0,70})|duration: ([\d.]+) ms)"
)
_WAIT = re.compile(r"(still waiting for|acquired) (\w+) on relation .* after ([\d.]+) ms")
LOGGING = {
    "log_statement": "ddl",
    "log_min_duration_statement": "50ms",
    "log_lock_waits": "on",
    "deadlock_timeout": "100ms",
}


def log_settings(url: str, on: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for name, value in LOGGING.items():
            conn.execute(
                f"ALTER SYSTEM SET {name} = '{value}'" if on else f"ALTER SYSTEM RESET {name}"
            )
        conn.execute("SELECT pg_reload_conf()")


def log_evidence(text: str) -> tuple[list[tuple[float, str]], list[tuple[str, str, float]]]:
    """(duration ms, schema statement) and (event, lock mode, ms) of lock waits, from the log;
    a statement whose duration is not logged took less than 50 ms (-1)."""
    durations: dict[str, float] = {}
    last: dict[str, str] = {}  # process -> its last schema statement
    for m in _LINE.finditer(text):
        if m[2] is not None:
            if not m[2].startswith("ALTER SYSTEM"):
                last[m[1]] = m[2]
                durations.setdefault(m[2], -1.0)
        elif m[1] in last:
            statement = last.pop(m[1])
            durations[statement] = max(durations[statement], float(m[3]))
    ddl = [(ms, statement) for statement, ms in durations.items()]
    waits = [(m[1], m[2], float(m[3])) for m in _WAIT.finditer(text)]
    return ddl, waits


HEALTH_LOGGER = "http.handlers.reverse_proxy.health_checker.active"


def failed_health_checks(caddy_log: Path) -> dict[str, int]:
    """Failed active health checks per instance address, from Caddy's own log (JSON lines)."""
    counts: dict[str, int] = {}
    try:
        lines = caddy_log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return counts
    for line in lines:
        if HEALTH_LOGGER not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        host = str(entry.get("host", "?"))
        counts[host] = counts.get(host, 0) + 1
    return counts


def instance_processes(state: Path) -> list[int]:
    """Pids whose environment names this state dir and an instance (every gunicorn process)."""
    marker = f"\0NONSTOP_STATE_DIR={state}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = b"\0" + (entry / "environ").read_bytes() + b"\0"
            except OSError:
                continue
            if marker in environ and b"\0NONSTOP_INSTANCE=" in environ:
                found.append(int(entry.name))
    return found


def starve(state: Path, seconds: float, share: float = 0.1) -> None:
    """For ``seconds``, let every instance process run only ``share`` of each second."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pids = instance_processes(state)  # the new release's too, once it starts
        _signal(pids, signal.SIGSTOP)
        time.sleep(1.0 - share)
        _signal(pids, signal.SIGCONT)
        time.sleep(share)


def _signal(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _seed(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO shop_customer (email, legacy) "
            "SELECT 'c' || g || '@example.com', 'x' FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("ANALYZE shop_customer")


def one_run(
    server: TempPostgres,
    rps: float,
    rows: int,
    number: int,
    starve_s: float = 0.0,
    connections: int = 100,
) -> dict[str, object]:
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="nonstop-bench-django-") as tmp:
        root = Path(tmp) / "shop"
        root.mkdir()
        project = Project(root, free_port())
        url = django_shop(project, server.url, f"bench{number}")
        agent = AgentProcess(project)
        try:
            agent.start()
            first_deploy(agent)
            _seed(url, rows)
            write_release_2(root)
            sampler = LockSampler(url)
            thread = threading.Thread(target=sampler.run, daemon=True)
            thread.start()
            log = server.root / "server.log"
            offset = log.stat().st_size
            log_settings(url, True)
            load = BackgroundLoad(project.url, rps)
            load.gen = LoadGenerator(
                project.url, rps, timeout=5.0, group_by_header="X-Release", connections=connections
            )
            with load:
                load_started = time.perf_counter()
                time.sleep(1.0)  # steady load before the deploy
                stopper = threading.Thread(target=starve, args=(project.paths.state, starve_s))
                if starve_s:
                    stopper.start()
                started = time.perf_counter()
                done = agent.wait_rollout(agent.deploy("v2")["id"], timeout=300)
                took = time.perf_counter() - started
                if starve_s:
                    stopper.join()
                time.sleep(1.0)
            sampler.stop.set()
            thread.join(10)
            log_settings(url, False)
            with log.open("rb") as handle:
                handle.seek(offset)
                evidence = log_evidence(handle.read().decode("utf-8", "replace"))
            refused = project.cli("migrate", "complete")
        finally:
            health = failed_health_checks(project.paths.state / "router" / "logs" / "caddy.log")
            agent.cleanup()
    report = load.report
    assert report is not None
    return {
        "status": done["status"],
        "deploy_s": took,
        "scheduled": report.scheduled,
        # a request the generator could not send within its max lag never reached the app:
        # every connection was busy with slow answers, or the generator itself fell behind;
        # counted apart from the requests that were sent and failed
        "failed": report.failed - report.not_sent,
        "not_sent": report.not_sent,
        "failures": {k: v for k, v in report.counts.items() if k not in ("ok", "not_sent") and v},
        "p99_ms": report.latency_scheduled.p99,
        # the generator's own lateness (due time to send) and the answers' (send to response):
        # which of the two a slow p99 comes from
        "lag_p99_ms": report.send_lag.p99,
        "sent_p99_ms": report.latency_sent.p99,
        "max_ms": report.latency_scheduled.max,
        "locks": sampler.longest(),
        "ddl": evidence[0],
        "waits": evidence[1],
        "contract_refused": refused.returncode == 1 and "v1" in refused.stderr + refused.stdout,
        "health_failed": health,
        # seconds of the load (scheduled) with a failed request, and the deploy's span in them
        "failed_seconds": [
            t.second for t in report.timeline if t.failed - t.counts.get("not_sent", 0)
        ],
        "deploy_span": (started - load_started, started - load_started + took),
        "statuses": dict(report.status_codes),
        "load": (load_start, os.getloadavg()[0]),
    }


def _print(run: dict[str, object]) -> None:
    print(
        f"  deploy {run['status']} in {run['deploy_s']:.1f} s; requests {run['scheduled']}, "
        f"failed {run['failed']} {run['failures']}, "
        f"not sent (connections busy or generator late) {run['not_sent']}, "
        f"latency p99 {run['p99_ms']:.0f} ms, max {run['max_ms']:.0f} ms "
        f"(send lag p99 {run['lag_p99_ms']:.0f} ms, from send p99 {run['sent_p99_ms']:.0f} ms); "
        f"contract refused while v1 warm: {run['contract_refused']}; "
        f"load average {run['load'][0]:.1f} -> {run['load'][1]:.1f}"  # type: ignore[index]
    )
    health = run["health_failed"]
    assert isinstance(health, dict)
    span = run["deploy_span"]
    assert isinstance(span, tuple)
    print(
        f"    statuses {run['statuses']}; failed health checks per instance "
        f"{sorted(health.values(), reverse=True)} ({sum(health.values())} in all); "
        f"seconds with a failed request {run['failed_seconds']} "
        f"(deploy from {span[0]:.1f} to {span[1]:.1f} s)"
    )
    locks = run["locks"]
    assert isinstance(locks, dict)
    for (mode, granted), seconds in sorted(locks.items()):
        kind = "blocking" if mode in BLOCKING else "non-blocking"
        shown = "< 20 ms" if seconds < 0.02 else f"{seconds * 1000:.0f} ms"
        print(f"    {mode:<24} {'held' if granted else 'waited':<6} longest {shown:>8}  ({kind})")
    for ms, statement in run["ddl"]:  # type: ignore[attr-defined]
        print(f"    server log: {'< 50 ms' if ms < 0 else f'{ms:.0f} ms':>8}  {statement}")
    waits = run["waits"]
    assert isinstance(waits, list)
    print(
        f"    server log: {len(waits)} lock waits over 100 ms"
        + "".join(f"; {event} {mode} after {ms:.0f} ms" for event, mode, ms in waits[:5])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=200)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--starve", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()
    initdb = next(Path(d, "initdb") for d in CANDIDATE_BIN_DIRS if Path(d, "initdb").exists())
    pg_ctl = initdb.parent / "pg_ctl"
    root = Path(tempfile.mkdtemp(prefix="nonstop-pg-"))
    server = TempPostgres(root, str(initdb), str(pg_ctl))
    server.start()
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, {args.rps} req/s"
        + f", up to {args.connections} in flight"
        + (f", instances starved {args.starve} s as the deploy starts" if args.starve else "")
    )
    worst_blocking = 0.0
    failed = 0
    refused = True
    try:
        for number in range(1, args.runs + 1):
            print(f"run {number}:")
            run = one_run(server, args.rps, args.rows, number, args.starve, args.connections)
            _print(run)
            locks = run["locks"]
            assert isinstance(locks, dict)
            blocking = [s for (mode, _), s in locks.items() if mode in BLOCKING]
            blocking += [ms / 1000 for ms, text in run["ddl"] if text.startswith("ALTER")]  # type: ignore[attr-defined]
            blocking += [ms / 1000 for _, mode, ms in run["waits"] if mode in BLOCKING]  # type: ignore[attr-defined]
            worst_blocking = max([worst_blocking, *blocking])
            failed += int(run["failed"])  # type: ignore[call-overload]
            refused = refused and bool(run["contract_refused"])
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"all runs: failed requests {failed}; longest blocking lock held or waited "
        f"{worst_blocking * 1000:.0f} ms (goal <= 2000 ms); contract refused in every run: "
        f"{refused}"
    )


if __name__ == "__main__":
    main()
