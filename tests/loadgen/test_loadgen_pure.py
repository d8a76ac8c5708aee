"""The pure parts of the load generator, from tables of worked examples."""

from __future__ import annotations

import pytest

from nonstop.errors import UsageError
from nonstop.loadgen import Outcome, Recorder
from nonstop.loadgen.options import (
    check_url,
    classify_status,
    parse_expect_status,
    parse_header,
    slot_count,
)
from nonstop.loadgen.report import GROUP_LIMIT, OTHER_GROUP


@pytest.mark.parametrize(
    ("rps", "duration", "slots"),
    [
        (300, 30, 9000),  # the README example
        (3, 1.5, 5),  # due at 0, .333, .667, 1.0, 1.333; 1.5 is past the end
        (0.5, 3, 2),  # due at 0 and 2
        (300, 0.1, 30),  # 300 * 0.1 = 30.000000000000004 must not give 31
        (10, 0.05, 1),  # slot 0 is due at once
        (10, 0, 0),
    ],
)
def test_slot_count(rps: float, duration: float, slots: int) -> None:
    assert slot_count(rps, duration) == slots


@pytest.mark.parametrize(
    ("status", "expected", "outcome"),
    [
        (200, None, Outcome.OK),
        (204, None, Outcome.OK),
        (302, None, Outcome.OK),  # redirects are not followed: a 3xx is an answer
        (404, None, Outcome.CLIENT_ERROR),
        (429, None, Outcome.CLIENT_ERROR),
        (502, None, Outcome.SERVER_ERROR),
        (101, None, Outcome.UNEXPECTED),
        (404, frozenset({404}), Outcome.OK),
        (200, frozenset({204}), Outcome.UNEXPECTED),
        (503, frozenset({200}), Outcome.SERVER_ERROR),
        (503, frozenset({503}), Outcome.OK),
    ],
)
def test_classify_status(status: int, expected: frozenset[int] | None, outcome: Outcome) -> None:
    assert classify_status(status, expected) is outcome


@pytest.mark.parametrize(
    ("values", "codes"),
    [
        ([], None),
        (["200"], {200}),
        (["200,204", "301-303"], {200, 204, 301, 302, 303}),
        ([" 200 , 201 "], {200, 201}),
    ],
)
def test_parse_expect_status(values: list[str], codes: set[int] | None) -> None:
    assert parse_expect_status(values) == (frozenset(codes) if codes is not None else None)


BAD_STATUS = '--expect-status: expected a status such as 200, "200,204" or "200-299"'
BAD_RANGE = "--expect-status: expected statuses between 100 and 599, low to high"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ok", f'{BAD_STATUS}, got "ok"'),
        ("200-", f'{BAD_STATUS}, got "200-"'),
        ("299-200", f'{BAD_RANGE}, got "299-200"'),
        ("700", f'{BAD_RANGE}, got "700"'),
    ],
)
def test_parse_expect_status_rejects(value: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_expect_status([value])
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("X-Token: abc", ("X-Token", "abc")),
        ("Host:example.com", ("Host", "example.com")),
        ("X-Empty:", ("X-Empty", "")),
        ("Authorization: Bearer a:b", ("Authorization", "Bearer a:b")),
    ],
)
def test_parse_header(value: str, header: tuple[str, str]) -> None:
    assert parse_header(value) == header


@pytest.mark.parametrize("value", ["no colon", ": value", "Two Words: x"])
def test_parse_header_rejects(value: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_header(value)
    assert str(info.value) == f'--header: expected "Name: value", got "{value}"'


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("foo", 'got "foo"'),
        ("ftp://example.com/", 'got "ftp://example.com/"'),
        ("http://", 'got "http://"'),
        ("127.0.0.1:8080", 'got "127.0.0.1:8080"'),
        ("http://h:99999/", "Port out of range"),
    ],
)
def test_check_url_rejects(value: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        check_url(value)
    assert str(info.value).startswith("--url: expected an http:// or https:// URL")
    assert fragment in str(info.value)


def test_check_url_accepts() -> None:
    assert check_url("http://[::1]:8080/health").port == 8080
    assert check_url("https://example.com").host == "example.com"


def test_recorder_worked_example() -> None:
    """rps 10, one connection, a server taking 300 ms: slot 1 (due 0.1) leaves at 0.3 when the
    connection frees and is answered at 0.6: 300 ms from sent, 500 ms from scheduled."""
    recorder = Recorder()
    recorder.record(Outcome.OK, 0, since_scheduled=0.3, since_sent=0.3, status=200, group="v1")
    recorder.record(Outcome.OK, 0, since_scheduled=0.5, since_sent=0.3, status=200, group="v1")
    recorder.record(Outcome.SERVER_ERROR, 1, since_scheduled=0.01, since_sent=0.01, status=503)
    recorder.record(Outcome.TRANSPORT, 1, since_scheduled=0.002, since_sent=0.001, error="Reset")
    recorder.record(Outcome.NOT_SENT, 2)
    report = recorder.report(url="http://x/", method="GET", rps=10, duration=2.5)

    assert report.scheduled == 5 == sum(report.counts.values())
    assert (report.ok, report.failed, report.not_sent, report.sent) == (2, 3, 1, 4)
    assert report.counts == {
        "ok": 2,
        "unexpected": 0,
        "4xx": 0,
        "5xx": 1,
        "transport": 1,
        "timeout": 0,
        "not_sent": 1,
    }
    assert report.status_codes == {200: 2, 503: 1}
    assert report.errors == {"Reset": 1}
    assert report.groups == {"v1": 2}
    # HdrHistogram with 3 significant digits: values within 0.1%
    assert report.latency_sent.max == pytest.approx(300.0, rel=1e-3)
    assert report.latency_scheduled.max == pytest.approx(500.0, rel=1e-3)
    assert report.latency_scheduled.p50 == pytest.approx(10.0, rel=1e-3)
    assert report.latency_scheduled.p99 == pytest.approx(500.0, rel=1e-3)
    assert report.send_lag.max == pytest.approx(200.0, rel=1e-3)
    assert report.send_lag.count == 4
    # 2.5 s of schedule: seconds 0, 1 and 2, each with what was scheduled in it
    assert [s.second for s in report.timeline] == [0, 1, 2]
    assert [s.counts["ok"] for s in report.timeline] == [2, 0, 0]
    assert [s.failed for s in report.timeline] == [0, 2, 1]
    assert report.timeline[0].groups == {"v1": 2}
    assert report.achieved_rps == 1.6  # 4 sent over 2.5 s
    assert report.verdict() == "FAIL: 3 of 5 requests not ok (5xx 1, transport 1, not_sent 1)"
    assert not report.passed


def test_recorder_empty_and_passing() -> None:
    empty = Recorder().report(url="http://x/", method="GET", rps=10, duration=0)
    assert (empty.scheduled, empty.passed, empty.latency_scheduled.count, empty.timeline) == (
        0,
        False,
        0,
        (),
    )
    assert empty.verdict() == "FAIL: no request was scheduled, so nothing was proven"

    recorder = Recorder()
    recorder.record(Outcome.OK, 0, since_scheduled=0.001, since_sent=0.001, status=200)
    report = recorder.report(url="http://x/", method="GET", rps=1, duration=1)
    assert report.passed
    assert report.verdict() == "PASS: all 1 requests ok"
    assert report.to_dict()["timeline"] == [
        {
            "second": 0,
            "ok": 1,
            "unexpected": 0,
            "4xx": 0,
            "5xx": 0,
            "transport": 0,
            "timeout": 0,
            "not_sent": 0,
            "groups": {},
        }
    ]


def test_recorder_bounds_the_number_of_groups() -> None:
    recorder = Recorder()
    for index in range(GROUP_LIMIT + 10):
        recorder.record(Outcome.OK, 0, since_scheduled=0.001, since_sent=0.001, group=f"g{index}")
    groups = recorder.report(url="http://x/", method="GET", rps=1, duration=1).groups
    assert len(groups) == GROUP_LIMIT + 1
    assert groups[OTHER_GROUP] == 10
