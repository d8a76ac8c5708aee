"""Jobs across deploys: real Celery (prefork), RQ and Dramatiq workers on a real Redis, jobs
enqueued at a steady rate through several deploys, every job id in a ledger kept by the jobs.

For each library:
  nonstop     a real agent deploys v2, v3, ... with a worker role (`queue` preset,
              stop_timeout), alternating blue-green and rolling
  baseline    no nonstop: the same workers started as plain processes; a deploy starts the new
              ones, sends SIGTERM to each old worker's process group and SIGKILL after 10 s

Reported: jobs enqueued, lost (never done), run twice (started twice), old worker processes
still alive after the deploys, jobs started on an old worker after its stop signal, the
longest stop (stop signal to every process gone) against stop_timeout, and stops that needed
the deadline's SIGKILL.

    .venv/bin/python benchmarks/bench_workers.py [--deploys 10] [--rate 20] [--stop-timeout 6]
        [--libraries celery,rq,dramatiq]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_deploy import machine

from e2e.harness import AgentProcess, Project, free_port
from jobs_harness import (
    Entry,
    SteadyLoad,
    alive,
    celery_role,
    configure_workers,
    enqueuer,
    judge,
    project_files,
    python,
    redis_server,
    stranded,
    wait_all_done,
    whereabouts,
    worker_command,
)

SLOTS = {"celery": (2, 3), "dramatiq": (2, 3), "rq": (6, 1)}
BASELINE_KILL = 10.0
ACKS_LATE = os.environ.get("CELERY_ACKS_LATE") == "1"
"""Celery tasks acknowledged after they ran (``task_acks_late``) rather than as they start."""


@dataclass
class Row:
    library: str
    mode: str
    deploys: int
    sent: int = 0
    lost: int = 0
    stranded: int = 0
    """Of the lost: left by RQ in its intermediate queue, never started (docs/workers.md)."""
    twice: int = 0
    left_alive: int = 0
    late_starts: int = 0
    late_max: float = 0.0
    """Seconds after its stop signal the last job started on an old worker."""
    longest_stop: float = 0.0
    killed: int = 0
    notes: list[str] = field(default_factory=list)


# -- nonstop ----------------------------------------------------------------------------------


def nonstop_run(library: str, url: str, args: argparse.Namespace) -> Row:
    row = Row(library, "nonstop", args.deploys)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        root = Path(tmp) / "shop"
        root.mkdir()
        app = resources.files("nonstop.demo").joinpath("sampleapp.py").read_text()
        (root / "app.py").write_text(app)
        project = Project(root, free_port())
        write_config(project, library, url, args.stop_timeout, "bluegreen")
        agent = AgentProcess(project)
        try:
            agent.start()
            deploy(agent, "v1")
            entries, sent = deploys_under_load(agent, project, library, url, args)
            measure_nonstop(row, agent, entries, sent)
            lost = judge(sent, entries).lost
            client = __import__("redis").Redis.from_url(url)
            row.stranded = len(stranded(client, library, lost))
            row.notes += whereabouts(client, library, lost)
        finally:
            agent.cleanup()
    return row


def write_config(project: Project, library: str, url: str, stop: float, strategy: str) -> None:
    env = {"REDIS_URL": url, "CELERY_ACKS_LATE": str(int(ACKS_LATE))}
    extra = celery_role(python(), stop / 2) if library == "celery" else ""
    configure_workers(project, library, stop, SLOTS[library], strategy, env, extra)


def deploy(agent: AgentProcess, release: str) -> None:
    row = agent.deploy(release)
    done = agent.wait_rollout(row["id"], timeout=300)
    if done["status"] != "completed":
        raise RuntimeError(f"deploy of {release}: {done['status']}: {done.get('reason')}")


def deploys_under_load(
    agent: AgentProcess, project: Project, library: str, url: str, args: argparse.Namespace
) -> tuple[list[Entry], list[str]]:
    client = __import__("redis").Redis.from_url(url)
    longest = args.stop_timeout / 2
    with SteadyLoad(enqueuer(library, url), args.rate, longest, prefix=library) as load:
        for number in range(2, args.deploys + 2):
            strategy = "bluegreen" if number % 2 == 0 else "rolling"
            write_config(project, library, url, args.stop_timeout, strategy)
            time.sleep(args.between)  # steady load between deploys, as in production
            deploy(agent, f"v{number}")
            wait_workers_only(agent, f"v{number}")
        time.sleep(args.between)
    return wait_all_done(client, load.sent, timeout=300, library=library), load.sent


def wait_workers_only(agent: AgentProcess, release: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        roles = {i["release"] for i in agent.status()["instances"] if i["role"] == "worker"}
        if roles == {release}:
            return
        time.sleep(0.2)
    raise RuntimeError(f"old workers still running after the deploy of {release}")


def measure_nonstop(row: Row, agent: AgentProcess, entries: list[Entry], sent: list[str]) -> None:
    verdict = judge(sent, entries)
    row.sent, row.lost, row.twice = verdict.sent, len(verdict.lost), len(verdict.twice)
    final = {i["release"] for i in agent.status()["instances"] if i["role"] == "worker"}
    old = {(e.pid, e.instance) for e in entries if e.instance.split(":")[0] not in final}
    row.left_alive = sum(1 for pid, instance in old if alive(pid, instance))
    events = agent.call("GET", "/v1/events?limit=10000")
    stopping, stopped = {}, {}
    for event in events:
        words = event["message"].split()
        if event["message"].startswith("stopping ") and ":worker-" in words[1]:
            stopping[words[1].rstrip(":")] = float(event["ts"])
        elif event["message"].startswith("stopped ") and ":worker-" in words[1]:
            stopped[words[1]] = float(event["ts"])
        if "at the stop deadline" in event["message"]:
            row.killed += 1
    late = [
        e.at - stopping[e.instance]
        for e in entries
        if e.what == "start" and e.instance in stopping and e.at > stopping[e.instance]
    ]
    row.late_starts, row.late_max = len(late), max(late, default=0.0)
    spans = [stopped[i] - stopping[i] for i in stopping if i in stopped]
    row.longest_stop = max(spans, default=0.0)


# -- baseline: group SIGTERM, SIGKILL after 10 s ------------------------------------------------


def baseline_run(library: str, url: str, args: argparse.Namespace) -> Row:
    row = Row(library, "baseline", args.deploys)
    client = __import__("redis").Redis.from_url(url)
    with tempfile.TemporaryDirectory(prefix="bench-workers-base-") as tmp:
        root = Path(tmp)
        project_files(root, library)
        workers = start_workers(root, library, url, "b1", args.stop_timeout)
        seen: set[tuple[int, str]] = set()
        longest = args.stop_timeout / 2
        try:
            with SteadyLoad(enqueuer(library, url), args.rate, longest, prefix="base") as load:
                for number in range(2, args.deploys + 2):
                    time.sleep(args.between)
                    new = start_workers(root, library, url, f"b{number}", args.stop_timeout)
                    seen |= processes_of(workers)
                    stop_group(workers, row)
                    workers = new
                time.sleep(args.between)
            entries = wait_all_done(client, load.sent, timeout=300, library=library)
        finally:
            stop_group(workers, row)
    verdict = judge(load.sent, entries)
    row.sent, row.lost, row.twice = verdict.sent, len(verdict.lost), len(verdict.twice)
    row.stranded = len(stranded(client, library, verdict.lost))
    old = {(e.pid, e.instance) for e in entries} | seen
    left = [pid for pid, instance in old if alive(pid, instance)]
    row.left_alive = len(left)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # leave the machine clean
    return row


def start_workers(
    root: Path, library: str, url: str, release: str, stop: float
) -> list[subprocess.Popen[bytes]]:
    replicas, slots = SLOTS[library]
    command = worker_command(library, python(), stop, slots)
    started = []
    for number in range(1, replicas + 1):
        env = {**os.environ, "REDIS_URL": url, "NONSTOP_INSTANCE": f"{release}:worker-{number}"}
        log = (root / f"{release}-{number}.log").open("ab")
        started.append(
            subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()
    time.sleep(1.0)  # as nonstop's readiness: up for 1 s
    return started


def processes_of(workers: list[subprocess.Popen[bytes]]) -> set[tuple[int, str]]:
    """Every process of the workers now (pool children, horses, by parentage), with the
    instance name each carries."""
    from nonstop.drivers.runtime import procfs

    pids = {w.pid for w in workers}
    pids |= procfs.descendants(pids, procfs.snapshot())
    found = set()
    for pid in pids:
        environ = procfs.environ(pid)
        start = environ.find(b"\0NONSTOP_INSTANCE=")
        if start >= 0:
            value = environ[start + 18 : environ.index(b"\0", start + 1)]
            found.add((pid, value.decode()))
    return found


def stop_group(workers: list[subprocess.Popen[bytes]], row: Row) -> None:
    began = time.monotonic()
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
    deadline = began + BASELINE_KILL
    while time.monotonic() < deadline and any(group_alive(w.pid) for w in workers):
        time.sleep(0.05)
    for worker in workers:
        if group_alive(worker.pid):
            row.killed += 1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    row.longest_stop = max(row.longest_stop, time.monotonic() - began)


def group_alive(pgid: int) -> bool:
    from nonstop.drivers.runtime import procfs

    return bool(procfs.group_members(pgid))


# -- report -----------------------------------------------------------------------------------


def report(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"machine: {machine()}",
        f"command: bench_workers.py --deploys {args.deploys} --rate {args.rate} "
        f"--stop-timeout {args.stop_timeout:g} --between {args.between:g}",
        "",
        "| library | mode | deploys | jobs | lost (of which stranded by RQ) | run twice | "
        "old processes left | "
        "started after stop signal | longest stop | killed at deadline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.library} | {r.mode} | {r.deploys} | {r.sent} | {r.lost} ({r.stranded}) | "
            f"{r.twice} | "
            f"{r.left_alive} | {_late(r)} | "
            f"{r.longest_stop:.1f} s | {r.killed} |"
        )
    return "\n".join(lines)


def _late(row: Row) -> str:
    if row.mode != "nonstop":
        return "-"
    return f"{row.late_starts} (last {row.late_max:.2f} s after)" if row.late_starts else "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--stop-timeout", type=float, default=6.0)
    parser.add_argument("--between", type=float, default=3.0, help="seconds between deploys")
    parser.add_argument("--libraries", default="celery,rq,dramatiq")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        sys.exit("redis-server is not installed (scripts/install-system-deps.sh)")
    rows = []
    for library in args.libraries.split(","):
        for mode in ("nonstop", "baseline"):
            if mode == "baseline" and args.no_baseline:
                continue
            with redis_server(redis_binary, free_port()) as redis:
                run = nonstop_run if mode == "nonstop" else baseline_run
                rows.append(run(library, redis.url, args))
                print(report(rows[-1:], args).splitlines()[-1], flush=True)
    print()
    print(report(rows, args))
    for row in rows:
        for note in row.notes:
            print(f"{row.library} {row.mode}: lost {note}")


if __name__ == "__main__":
    main()
