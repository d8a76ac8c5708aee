"""Delivery against a real local aiohttp receiver: signed JSON, Slack text, a receiver down
then up (retries deliver), one that always fails (bounded, a warning event), a full queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from nonstop.config.schema import NotifyConfig
from nonstop.notify import notices
from nonstop.notify.deliver import Notifier
from nonstop.notify.notices import RolloutRef
from notify.receiver import Receiver

REF = RolloutRef(7, "canary", "v2", "v1")


def notice(n: int = 0) -> notices.Notice:
    return notices.started(RolloutRef(n, "canary", "v2", "v1"), 1_700_000_000.0)


class Events:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, level: str, message: str) -> None:
        self.lines.append((level, message))


def make(receiver: Receiver, log: Events, **settings: object) -> Notifier:
    config = NotifyConfig.model_validate({"url": receiver.url, "backoff": "10ms", **settings})
    notifier = Notifier([config], "shop", log)
    notifier.random = lambda: 0.5  # the jitter's draw; delays stay tiny and known
    return notifier


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


async def test_json_notice_is_delivered_signed(receiver: Receiver) -> None:
    events = Events()
    notifier = make(receiver, events, secret="s3cret", headers={"X-Team": "payments"})
    notifier.start()
    notifier.notify(notice(7))
    await receiver.wait_for(lambda: len(receiver.received) == 1)
    await notifier.close()
    got = receiver.received[0]
    assert got.json == {
        "event": "rollout_started",
        "app": "shop",
        "message": "canary rollout 7 started: v1 -> v2",
        "reason": None,
        "at": "2023-11-14T22:13:20.000Z",
        "rollout": {
            "id": 7,
            "strategy": "canary",
            "candidate": "v2",
            "stable": "v1",
            "rollback": False,
        },
    }
    stamp = got.headers["X-Nonstop-Timestamp"]
    assert got.headers["X-Nonstop-Signature"] == notices.sign("s3cret", stamp, got.body)
    assert got.headers["X-Team"] == "payments"
    assert got.headers["X-Nonstop-Event"] == "rollout_started"
    assert notifier.counts()[0] == (receiver.url, "delivered", 1)
    assert events.lines == []


async def test_slack_format_and_event_filter(receiver: Receiver) -> None:
    notifier = make(receiver, Events(), format="slack", events=["rolled_back"])
    notifier.start()
    notifier.notify(notice(1))  # not wanted by this receiver
    finish = notices.finished(REF, notices.Finish("rolled_back", "error rate 9% > 2%"), 0.0)
    notifier.notify(finish)
    await receiver.wait_for(lambda: len(receiver.received) == 1)
    await notifier.close()
    assert receiver.attempts == 1
    assert receiver.received[0].json == {
        "text": ":rotating_light: *shop*: rollout 7 rolled back (v2): error rate 9% > 2%"
    }


async def test_a_receiver_that_is_down_then_comes_up_gets_the_notice() -> None:
    receiver = Receiver()  # its port is not listening yet: connections are refused
    events = Events()
    notifier = make(receiver, events, retries=50)
    notifier.start()
    notifier.notify(notice(3))
    target = notifier.targets[0]
    await until(lambda: target.counts["retried"] >= 2)  # refused twice, still retrying
    await receiver.start()
    try:
        await receiver.wait_for(lambda: len(receiver.received) == 1)
        await notifier.close()
    finally:
        await receiver.stop()
    assert receiver.received[0].json["rollout"]["id"] == 3
    assert target.counts["delivered"] == 1
    assert target.counts["failed"] == 0
    assert events.lines == []


async def test_a_receiver_that_always_fails_is_given_up_on_with_a_warning(
    receiver: Receiver,
) -> None:
    receiver.status = 503
    events = Events()
    notifier = make(receiver, events, retries=3)
    notifier.start()
    notifier.notify(notice(4))
    notifier.notify(notice(5))
    await until(lambda: len(events.lines) == 2)
    await notifier.close()
    assert receiver.attempts == 8  # 1 + 3 retries, for each notice; then no more
    assert (
        events.lines
        == [
            (
                "warning",
                f"notify {receiver.url}: rollout_started not delivered after 4 attempts: HTTP 503",
            )
        ]
        * 2
    )
    assert notifier.targets[0].counts["failed"] == 2


async def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.status = 404
    events = Events()
    notifier = make(receiver, events, retries=5)
    notifier.start()
    notifier.notify(notice(1))
    await until(lambda: bool(events.lines))
    await notifier.close()
    assert receiver.attempts == 1
    assert events.lines[0][1].endswith("not delivered after 1 attempt: HTTP 404")


async def test_the_queue_is_bounded_and_a_hung_receiver_never_blocks_notify(
    receiver: Receiver,
) -> None:
    receiver.hold = asyncio.Event()
    events = Events()
    config = NotifyConfig.model_validate({"url": receiver.url, "timeout": "60s"})
    notifier = Notifier([config], "shop", events, queue_size=3)
    notifier.start()
    notifier.notify(notice(0))
    await until(lambda: receiver.attempts == 1)  # 0 is being sent
    for n in range(1, 6):  # 1..5 into a queue of 3: 1 and 2 are dropped
        notifier.notify(notice(n))
    target = notifier.targets[0]
    assert [q.rollout.id for q in target.queue if q.rollout] == [3, 4, 5]
    assert target.counts["dropped"] == 2
    assert events.lines == [
        ("warning", f"notify {receiver.url}: queue full, dropped the oldest notice (1 so far)")
    ]
    receiver.hold.set()
    await receiver.wait_for(lambda: len(receiver.received) == 4)
    await notifier.close()
    assert [json.loads(r.body)["rollout"]["id"] for r in receiver.received] == [0, 3, 4, 5]


async def test_close_counts_what_it_could_not_send(receiver: Receiver) -> None:
    receiver.hold = asyncio.Event()
    events = Events()
    notifier = make(receiver, events, timeout="60s")
    notifier.start()
    notifier.notify(notice(1))
    notifier.notify(notice(2))
    await until(lambda: receiver.attempts == 1)
    await notifier.close(grace=0.0)
    receiver.hold.set()
    assert events.lines == [("warning", f"notify {receiver.url}: 2 not sent (the agent stopped)")]
    assert notifier.targets[0].counts["dropped"] == 2


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Wait for ``condition`` (polled), failing after ``timeout`` seconds."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)
