"""The load generator against real servers on real sockets."""

from __future__ import annotations

import asyncio

import pytest
from loadgen_servers import App, ThreadedServer

from nonstop.errors import UsageError
from nonstop.loadgen import LoadGenerator, LoadReport, run_load


def assert_adds_up(report: LoadReport) -> None:
    """No scheduled request disappears: outcomes, and each second's outcomes, sum to scheduled."""
    assert sum(report.counts.values()) == report.scheduled
    assert sum(sum(s.counts.values()) for s in report.timeline) == report.scheduled
    assert report.sent + report.not_sent == report.scheduled
    assert report.latency_sent.count == report.sent


async def test_every_scheduled_request_has_one_outcome(server: ThreadedServer) -> None:
    # 100 rps for 1 s is exactly 100 slots; the server fails every 4th request it sees.
    report = await run_load(f"{server.url}/every/4/500", rps=100, duration=1)
    assert_adds_up(report)
    assert report.scheduled == 100
    assert report.counts["5xx"] == 25
    assert report.ok == 75
    assert report.failed == 25
    assert report.status_codes == {200: 75, 500: 25}
    assert report.duration == 1.0
    assert report.achieved_rps == 100.0
    assert report.verdict() == "FAIL: 25 of 100 requests not ok (5xx 25)"


async def test_status_classes_and_expected_status(server: ThreadedServer) -> None:
    not_found = await run_load(f"{server.url}/status/404", rps=50, duration=0.2)
    assert not_found.counts["4xx"] == not_found.scheduled == 10
    expected = await run_load(f"{server.url}/status/404", rps=50, duration=0.2, expect_status=[404])
    assert expected.passed
    redirect = await run_load(f"{server.url}/status/302", rps=50, duration=0.2)
    assert redirect.passed  # not followed: the 302 itself is the answer
    created = await run_load(f"{server.url}/status/201", rps=50, duration=0.2, expect_status=[200])
    assert created.counts["unexpected"] == 10


async def test_refused_connections_are_transport_errors(refused_url: str) -> None:
    report = await run_load(refused_url, rps=50, duration=0.2)
    assert_adds_up(report)
    assert report.counts["transport"] == report.scheduled == 10
    assert report.errors == {"ClientConnectorError(ECONNREFUSED)": 10}


async def test_a_server_that_hangs_up_gives_transport_errors(
    hang_up_server: ThreadedServer,
) -> None:
    report = await run_load(f"{hang_up_server.url}/", rps=50, duration=0.2)
    assert_adds_up(report)
    assert report.counts["transport"] == report.scheduled == 10
    assert report.status_codes == {}
    # Each GET went out twice (the second time on a new connection too), and the report says so.
    assert report.retried == {"new connection closed": 10}
    posted = await run_load(f"{hang_up_server.url}/", rps=50, duration=0.2, method="POST")
    assert posted.counts["transport"] == posted.scheduled == 10
    assert posted.retried == {}  # not idempotent: never sent twice


async def test_a_reused_connection_closed_unanswered_is_retried_on_a_new_one(
    one_answer_server: ThreadedServer,
) -> None:
    """Every request that meets a kept-alive connection the server closes is sent again on a
    new connection and succeeds: all ok, each retry counted by its cause."""
    report = await run_load(f"{one_answer_server.url}/", rps=20, duration=0.5, connections=1)
    assert_adds_up(report)
    assert report.counts["ok"] == report.scheduled == 10
    assert set(report.retried) == {"reused connection closed"}
    assert 1 <= report.retried["reused connection closed"] <= report.scheduled
    assert report.to_dict()["retried"] == report.retried


async def test_slow_answers_time_out(server: ThreadedServer) -> None:
    report = await run_load(f"{server.url}/slow?ms=2000", rps=20, duration=0.25, timeout=0.2)
    assert_adds_up(report)
    assert report.counts["timeout"] == report.scheduled == 5
    assert report.latency_sent.p50 >= 200  # nobody gives up before the timeout


async def test_latency_from_schedule_includes_queueing(server: ThreadedServer) -> None:
    """Coordinated omission: one connection, a 50 ms endpoint, 40 rps for 0.5 s. The 20
    requests run one after another, so the last cannot finish before 20 * 50 = 1000 ms; it was
    due at 475 ms, so at least 525 ms passed since its scheduled time, while the server only
    ever took ~50 ms once it had a request."""
    report = await run_load(
        f"{server.url}/slow?ms=50", rps=40, duration=0.5, connections=1, max_lag=30
    )
    assert_adds_up(report)
    assert report.ok == report.scheduled == 20
    assert report.latency_sent.p50 >= 50
    assert report.latency_scheduled.max >= 525
    assert report.latency_scheduled.max > 5 * report.latency_sent.p50
    assert report.send_lag.max >= 475


async def test_requests_that_cannot_leave_in_time_are_not_sent(server: ThreadedServer) -> None:
    """One connection held 300 ms per request, 20 rps and a 100 ms bound on waiting for it:
    slots due while it is busy give up after 100 ms and are counted, not dropped."""
    report = await run_load(
        f"{server.url}/slow?ms=300", rps=20, duration=0.5, connections=1, max_lag=0.1
    )
    assert_adds_up(report)
    assert report.scheduled == 10
    assert report.ok >= 1
    assert report.not_sent >= 1
    assert report.ok + report.not_sent == 10


async def test_a_server_stopped_mid_run_shows_in_the_timeline(server: ThreadedServer) -> None:
    generator = LoadGenerator(f"{server.url}/", rps=40)
    await generator.start()
    await asyncio.sleep(1.5)  # second 0 is answered well before the stop, even on a busy box
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(1.0)
    report = await generator.stop()
    assert_adds_up(report)
    first, last = report.timeline[0], report.timeline[-1]
    assert first.counts["ok"] == 40
    assert first.failed == 0
    assert last.counts["ok"] == 0
    assert last.counts["transport"] > 0
    assert not report.passed


async def test_groups_show_which_release_answered(server: ThreadedServer, app: App) -> None:
    generator = LoadGenerator(f"{server.url}/", rps=40, group_by_header="X-Release")
    await generator.start()
    await asyncio.sleep(1.5)
    app.release = "v2"
    await asyncio.sleep(1.0)
    report = await generator.stop()
    assert report.passed
    assert set(report.groups) == {"v1", "v2"}
    assert sum(report.groups.values()) == report.scheduled
    assert report.timeline[0].groups == {"v1": 40}
    assert set(report.timeline[-1].groups) == {"v2"}

    by_body = await run_load(f"{server.url}/", rps=20, duration=0.2, group_by_body=2)
    assert by_body.groups == {"v2": 4}
    missing = await run_load(f"{server.url}/slow?ms=1", rps=20, duration=0.2, group_by_header="X")
    assert missing.groups == {"(missing)": 4}


async def test_warmup_is_counted_apart(server: ThreadedServer) -> None:
    report = await run_load(f"{server.url}/", rps=20, duration=0.5, warmup=0.3)
    assert report.scheduled == 10
    assert sum(report.warmup.values()) == report.warmup["ok"] == 6
    assert report.settings["warmup"] == 0.3


async def test_until_an_event_or_an_awaitable(server: ThreadedServer) -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, done.set)
    report = await run_load(f"{server.url}/", rps=50, until=done)
    assert_adds_up(report)
    assert report.passed
    assert report.duration > 0

    async def deploy() -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("deploy failed")

    with pytest.raises(RuntimeError, match="deploy failed"):
        await run_load(f"{server.url}/", rps=50, until=deploy())

    # a duration shorter than the awaitable ends the run first; the coroutine is cancelled
    short = await run_load(f"{server.url}/", rps=50, duration=0.2, until=asyncio.sleep(30))
    assert short.scheduled == 10


async def test_post_with_headers_and_body(server: ThreadedServer) -> None:
    report = await run_load(
        f"{server.url}/status/201",
        rps=20,
        duration=0.2,
        method="POST",
        headers={"X-Test": "1"},
        body=b"{}",
    )
    assert report.passed
    assert report.status_codes == {201: 4}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "http://127.0.0.1:1/", "rps": 0}, "rps: expected a number > 0, got 0"),
        ({"url": "http://127.0.0.1:1/", "rps": -5}, "rps: expected a number > 0, got -5"),
        ({"url": "nope", "rps": 1}, "--url: expected an http:// or https:// URL"),
        (
            {"url": "http://127.0.0.1:1/", "rps": 1, "duration": 0},
            "duration: expected a number > 0, got 0",
        ),
        (
            {"url": "http://127.0.0.1:1/", "rps": 1, "connections": 0},
            "connections: expected an integer >= 1, got 0",
        ),
        (
            {"url": "http://127.0.0.1:1/", "rps": 1, "timeout": 0},
            "timeout: expected a number > 0, got 0",
        ),
        (
            {"url": "http://127.0.0.1:1/", "rps": 1, "method": "GE T"},
            'method: expected an HTTP method such as GET or POST, got "GE T"',
        ),
        (
            {"url": "http://127.0.0.1:1/", "rps": 1, "group_by_header": "X", "group_by_body": 2},
            "group by a header or by a body prefix, not both",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as info:
        LoadGenerator(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


async def test_an_impossible_rate_still_stops_and_counts_every_slot(refused_url: str) -> None:
    """A million requests a second is far beyond one event loop: the scheduler must still yield
    (so stop() can run) and every slot it reached must be either sent or not_sent."""
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, done.set)
    report = await run_load(refused_url, rps=1_000_000, until=done, max_lag=0.001)
    assert_adds_up(report)
    assert report.not_sent > 0
    assert report.ok == 0


async def test_run_load_needs_an_end() -> None:
    with pytest.raises(UsageError, match="give a duration, an until, or both"):
        await run_load("http://127.0.0.1:1/", rps=1)
