"""Real Celery (prefork), RQ and Dramatiq workers against a real Redis, deployed by a real
agent while jobs are enqueued at a steady rate: every job runs once, none is lost, and no
process of an old worker is left once the deploy is over.

The ledger (tests/jobs_harness.py) is written by the jobs themselves; nothing here depends
on timing: the checks read it once every job has had its chance to finish."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.harness import AgentProcess, Project, free_port
from jobs_harness import (
    Entry,
    RedisServer,
    SteadyLoad,
    alive,
    celery_role,
    configure_workers,
    enqueuer,
    judge,
    python,
    redis_server,
    stranded,
    wait_all_done,
)
from nonstop_testing import require_binary

pytestmark = pytest.mark.slow

LONGEST_JOB = 2.0
STOP_TIMEOUT = 15.0
"""Far above the longest job: an old worker has time to finish its jobs and exit however loaded
the machine is, so "ended on its own, before the deadline" is a condition, not a race (Dramatiq's
own shutdown timeout is 80% of it, docs/workers.md)."""
SLOTS = {"celery": (2, 3), "dramatiq": (2, 3), "rq": (4, 1)}
"""Per library: (replicas, jobs at once per instance): about 6 at once, for 20 jobs/s."""


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server(require_binary("redis-server"), free_port()) as server:
        yield server


CELERY_ROLE = celery_role(python(), LONGEST_JOB)
"""Celery as docs/workers.md recommends: late acks, one message per free pool process, a quiet
step that cancels this instance's consumer and a grace longer than the longest task, so the
stop signal finds no task in hand, and the warm shutdown has none to put back."""


def configure(project: Project, library: str, url: str, strategy: str) -> None:
    env, extra = {"REDIS_URL": url}, ""
    if library == "celery":
        env, extra = {**env, "CELERY_ACKS_LATE": "1"}, CELERY_ROLE
    configure_workers(project, library, STOP_TIMEOUT, SLOTS[library], strategy, env, extra)


def wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def worker_releases(agent: AgentProcess) -> set[str]:
    return {i["release"] for i in agent.status()["instances"] if i["role"] == "worker"}


def deployed(agent: AgentProcess, release: str) -> None:
    row = agent.deploy(release)
    done = agent.wait_rollout(row["id"], timeout=120)
    assert done["status"] == "completed", (done, agent.log_tail())


@pytest.mark.parametrize("strategy", ["bluegreen", "rolling"])
@pytest.mark.parametrize("library", ["celery", "rq", "dramatiq"])
def test_a_deploy_under_steady_enqueue_loses_and_repeats_no_job(
    project: Project, agent: AgentProcess, redis: RedisServer, library: str, strategy: str
) -> None:
    configure(project, library, redis.url, strategy)
    agent.start()
    deployed(agent, "v1")
    with SteadyLoad(enqueuer(library, redis.url), rate=20, longest=LONGEST_JOB) as load:
        wait_for(lambda: len(load.sent) >= 40, "40 jobs enqueued")
        deployed(agent, "v2")
        wait_for(lambda: worker_releases(agent) == {"v2"}, "only v2 workers")
        after = len(load.sent)
        wait_for(lambda: len(load.sent) >= after + 40, "40 more jobs enqueued")
    sent = load.sent
    entries = wait_all_done(redis.client(), sent, timeout=120, library=library)
    verdict = judge(sent, entries)
    assert load.errors == []
    # RQ's own shutdown race (docs/workers.md) may strand a job it never started; it is told
    # apart, not counted as lost by nonstop.
    lost = [job for job in verdict.lost if job not in stranded(redis.client(), library, sent)]
    assert (lost, verdict.twice) == ([], []), str(verdict)
    old = {(e.pid, e.instance) for e in entries if e.instance.startswith("v1:")}
    new = {e.instance for e in entries if e.instance.startswith("v2:")}
    assert old, "the old workers ran no job"
    assert new, "the new workers ran no job"
    assert [pid for pid, instance in old if alive(pid, instance)] == []
    events = [e["message"] for e in agent.call("GET", "/v1/events?limit=2000")]
    killed = [e for e in events if "at the stop deadline" in e]
    assert killed == []  # every old worker ended on its own, within its stop_timeout
    assert any(e.startswith("stopping v1:worker-1: ") for e in events), events
    if library == "celery":
        assert started_after_quiet(agent, entries) == []


def started_after_quiet(agent: AgentProcess, entries: list[Entry]) -> list[Entry]:
    """Jobs an old worker started after its quiet step was acknowledged (the agent records
    "quieted <instance>" once the quiet command exited 0, after the worker's reply)."""
    quieted = {
        str(e["message"]).split()[1]: float(e["ts"])
        for e in agent.call("GET", "/v1/events?limit=2000")
        if str(e["message"]).startswith("quieted v1:")
    }
    assert quieted, "no old worker was quieted"
    return [e for e in entries if e.what == "start" and e.at > quieted.get(e.instance, e.at)]
