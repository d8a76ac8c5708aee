"""Login links, sessions and [dashboard] settings: pure, from tables with worked examples."""

from __future__ import annotations

import pytest

from nonstop.agent.dashboard.auth import MAX_SESSIONS, LoginTokens, Sessions
from nonstop.config.validate import dashboard_listen_problem, host_port


@pytest.mark.parametrize(
    ("issued", "redeemed", "ok"),
    [
        (0.0, 5.0, True),  # within the 120 s
        (0.0, 119.9, True),
        (0.0, 120.0, False),  # expired at exactly ttl
        (0.0, 500.0, False),
    ],
)
def test_a_login_token_works_within_its_ttl(issued: float, redeemed: float, ok: bool) -> None:
    tokens = LoginTokens(ttl=120.0)
    token = tokens.issue(issued)
    assert tokens.redeem(token, redeemed) is ok


def test_a_login_token_works_once() -> None:
    tokens = LoginTokens(ttl=120.0)
    token = tokens.issue(0.0)
    assert tokens.redeem(token, 1.0)
    assert not tokens.redeem(token, 2.0)


@pytest.mark.parametrize("given", ["", "x", "a" * 129, "not-issued"])
def test_unknown_tokens_are_refused(given: str) -> None:
    tokens = LoginTokens(ttl=120.0)
    tokens.issue(0.0)
    assert not tokens.redeem(given, 1.0)


def test_pending_tokens_are_bounded_oldest_first() -> None:
    tokens = LoginTokens(ttl=120.0)
    first = tokens.issue(0.0)
    rest = [tokens.issue(float(i)) for i in range(1, 33)]
    assert not tokens.redeem(first, 40.0)
    assert tokens.redeem(rest[-1], 40.0)


@pytest.mark.parametrize(
    ("touches", "alive"),
    [
        ([5.0], True),
        ([3000.0, 6500.0], True),  # each request moves the idle deadline on
        ([3601.0], False),  # idle past session_ttl
        ([3000.0, 6601.0], False),
    ],
)
def test_a_session_ends_after_idling_past_its_ttl(touches: list[float], alive: bool) -> None:
    sessions = Sessions(ttl=3600.0)
    session = sessions.create(0.0)
    results = [sessions.touch(session.id, t) for t in touches]
    assert (results[-1] is not None) is alive


def test_sessions_check_csrf_and_can_end() -> None:
    sessions = Sessions(ttl=60.0)
    session = sessions.create(0.0)
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok(None)
    assert not session.csrf_ok(session.csrf + "x")
    assert sessions.touch(None, 1.0) is None
    sessions.end(session.id)
    assert sessions.touch(session.id, 1.0) is None


def test_sessions_are_bounded_least_recently_used_first() -> None:
    sessions = Sessions(ttl=1e9)
    first = sessions.create(0.0)
    second = sessions.create(1.0)
    sessions.touch(first.id, 2.0)  # first is now more recent than second
    for i in range(MAX_SESSIONS - 1):
        sessions.create(3.0 + i)
    assert len(sessions) == MAX_SESSIONS
    assert sessions.touch(first.id, 100.0) is not None
    assert sessions.touch(second.id, 100.0) is None


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:8470", ("127.0.0.1", 8470)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:8470", None),  # an IP address, not a name
        ("127.0.0.1", None),
        ("127.0.0.1:65536", None),
        ("127.0.0.1:-1", None),
    ],
)
def test_host_port(value: str, parsed: tuple[str, int] | None) -> None:
    assert host_port(value) == parsed


@pytest.mark.parametrize(
    ("listen", "cert", "key", "problem"),
    [
        (None, None, None, None),
        ("127.0.0.1:8470", None, None, None),
        ("[::1]:8470", None, None, None),
        ("0.0.0.0:8470", "c.pem", "k.pem", None),
        ("0.0.0.0:8470", None, None, 'listen: "0.0.0.0:8470" is not a loopback address'),
        ("10.0.0.5:8470", None, None, 'listen: "10.0.0.5:8470" is not a loopback address'),
        ("dash:8470", None, None, 'listen: expected "127.0.0.1:PORT"'),
        ("127.0.0.1:8470", "c.pem", None, "tls_cert and tls_key go together"),
    ],
)
def test_dashboard_listen(
    listen: str | None, cert: str | None, key: str | None, problem: str | None
) -> None:
    found = dashboard_listen_problem(listen, cert, key)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)


def test_a_bad_listen_names_its_key_in_nonstop_toml() -> None:
    from nonstop.config.load import validate_config
    from nonstop.errors import ConfigError

    wire = {
        "app": {"name": "shop", "command": "app --port {port}"},
        "dashboard": {"listen": "0.0.0.0:8470"},
    }
    with pytest.raises(ConfigError, match=r"dashboard.*not a loopback address"):
        validate_config(wire)
