"""[[notify]] and [metrics] token in nonstop.toml: errors name the key and what was expected."""

from __future__ import annotations

import pytest

from nonstop.agent.metrics import metrics_token
from nonstop.config.load import parse_config
from nonstop.errors import ConfigError, UsageError

APP = '[app]\nname = "a"\ncommand = "x {port}"\n'

BAD = [
    ('url = "ftp://x"', 'notify[0].url: expected an "http://" or "https://" URL, got "ftp://x"'),
    (
        'url = "http:///x"',
        'notify[0].url: expected an "http://" or "https://" URL, got "http:///x"',
    ),
    (
        'url = "http://x"\nevents = ["pasued"]',
        "notify[0].events[0]: expected one of rollout_started, step_reached, paused, promoted, "
        'rolled_back, flag_disabled, got "pasued"',
    ),
    (
        'url = "http://x"\nheaders = { "Bad Name" = "x" }',
        'notify[0].headers: "Bad Name" is not a valid header name',
    ),
    (
        'url = "http://x"\nformat = "teams"',
        'notify[0].format: expected one of json, slack, got "teams"',
    ),
    ('url = "http://x"\nretries = -1', "notify[0].retries"),
    ('url = "http://x"\nwebhook = "y"', "notify[0].webhook"),
]


@pytest.mark.parametrize(("table", "message"), BAD)
def test_bad_notify_entries_name_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(f"{APP}[[notify]]\n{table}\n")
    assert message in str(raised.value)


def test_defaults_and_several_receivers() -> None:
    config = parse_config(
        f'{APP}[[notify]]\nurl = "https://hooks.example/a"\n'
        '[[notify]]\nurl = "http://127.0.0.1:9/b"\nformat = "slack"\nevents = ["rolled_back"]\n'
    )
    first, second = config.notify
    assert first.format == "json"
    assert len(first.events) == 6
    assert (first.retries, first.backoff, first.max_backoff, first.timeout) == (8, 1.0, 60.0, 5.0)
    assert second.events == ["rolled_back"]


def test_metrics_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(f'{APP}[metrics]\ntoken = "$SCRAPE_TOKEN"\n')
    monkeypatch.setenv("SCRAPE_TOKEN", "t0k")
    assert metrics_token(config) == "t0k"
    monkeypatch.delenv("SCRAPE_TOKEN")
    with pytest.raises(
        UsageError, match=r"metrics\.token: the environment variable SCRAPE_TOKEN is not set"
    ):
        metrics_token(config)
    assert metrics_token(parse_config(APP)) is None
