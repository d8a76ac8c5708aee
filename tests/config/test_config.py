"""nonstop.toml validation: each bad input gets a line naming the key path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.config import load_config, parse_config, to_wire
from nonstop.config.units import format_duration, parse_duration, resolve_count
from nonstop.errors import ConfigError

APP = '[app]\nname = "shop"\ncommand = "python3 app.py --port {port}"\n'

ERRORS = [
    (
        APP + '[strategy]\nkind = "bleugreen"\n',
        'strategy.kind: expected one of bluegreen, rolling, canary, got "bleugreen"',
    ),
    (
        '[app]\nname = "shop"\ncommand = "python3 app.py"\n',
        'app.command: must contain the "{port}"',
    ),
    (APP + "replicas = 0\n", "app.replicas: expected a value >= 1, got 0"),
    (APP + 'replicas = "two"\n', 'app.replicas: expected an integer, got "two"'),
    (APP + '[router]\nlisten = "8080"\n', 'router.listen: expected "host:port"'),
    (
        APP + '[router]\nkind = "envoy"\n',
        'router.kind: expected one of caddy, haproxy, nginx, got "envoy"',
    ),
    (
        APP + '[runtime]\nkind = "docker"\n',
        'runtime.kind: expected one of local, got "docker"',
    ),
    (APP + '[health]\npath = "health"\n', 'health.path: expected a path starting with "/"'),
    (APP + '[health]\ninterval = "5 parsecs"\n', "health.interval: expected a duration"),
    (APP + "[health]\ntimeout = -1\n", "health.timeout: expected a non-negative duration"),
    (APP + "colour = 1\n", "app.colour: unknown key"),
    ('[app]\nname = "shop"\n', "app.command: required key is missing"),
    ("", "app: required key is missing"),
    (
        APP + '[strategy.rolling]\nmax_surge = "200%"\n',
        "strategy.rolling.max_surge: expected a percentage between 0% and 100%",
    ),
    (
        APP + "[strategy.rolling]\nmax_unavailable = -1\n",
        "strategy.rolling.max_unavailable: expected a count >= 0",
    ),
    (
        APP + '[strategy]\nkind = "canary"\n',
        'strategy: kind "canary" needs a [strategy.canary] table',
    ),
    (
        APP + "[strategy.canary]\nsteps = [{ weight = 5 }, { weight = 150 }]\n",
        "strategy.canary.steps[1].weight: expected a value <= 100, got 150",
    ),
    (
        APP + "[strategy.canary]\nsteps = [{ weight = 50 }, { weight = 20 }]\n",
        "strategy.canary.steps[1].weight: weights must not decrease, got 20 after 50",
    ),
    (
        APP + "[strategy.canary]\nsteps = [{ wieght = 5 }]\n",
        'strategy.canary.steps[0].wieght: unknown key (did you mean "weight"?)',
    ),
    (APP + "comand = 1\n", 'app.comand: unknown key (did you mean "command"?)'),
    ('[helth]\npath = "/"\n' + APP, 'helth: unknown key (did you mean "health"?)'),
    (APP + '[router]\nupstream_timout = "3s"\n', '(did you mean "upstream_timeout"?)'),
    (
        APP + '[strategy.canary]\nsteps = [{ pause = { until = "never" } }]\n',
        "strategy.canary.steps[0].pause: expected a duration, or {} to wait for `nonstop promote`",
    ),
    (
        APP
        + '[strategy.canary]\npreset = "quick"\n[[strategy.canary.analysis]]\nmetric = "latency"\n',
        'strategy.canary.analysis[0]: needs "max" or "min"',
    ),
    (
        APP + '[strategy.canary]\npreset = "quick"\n[[strategy.canary.analysis]]\n'
        'metric = "error_rate"\nmax = 0.01\nconfidence = 1\n',
        "strategy.canary.analysis[0].confidence: expected a value < 1.0, got 1",
    ),
    (
        APP + '[strategy.canary]\npreset = "quick"\n[[strategy.canary.analysis]]\n'
        'metric = "error_rate"\nmax = 0.01\nundecided = "fail"\n',
        'strategy.canary.analysis[0].undecided: expected one of pause, pass, got "fail"',
    ),
    (
        APP + '[metrics]\nprovider = "prometheus"\n',
        'metrics: provider "prometheus" needs "prometheus_url"',
    ),
    (APP + "[app\n", "not valid TOML"),
    (
        APP + "[router]\nrelease_slots = true\n",
        'router.release_slots: served by the haproxy router only (kind is "caddy"): set '
        'kind = "haproxy"',
    ),
    (
        APP + '[router]\nkind = "nginx"\nrelease_slots = true\n',
        'router.release_slots: served by the haproxy router only (kind is "nginx"): set '
        'kind = "haproxy"',
    ),
    (
        APP + '[router]\nkind = "haproxy"\nrelease_slots = "sometimes"\n',
        "router.release_slots: expected",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS, ids=[e[1][:50] for e in ERRORS])
def test_bad_config_names_the_key_and_what_was_expected(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert expected in str(info.value)
    assert str(info.value).startswith("nonstop.toml: ")


def test_every_problem_is_reported_at_once() -> None:
    text = '[app]\nname = "shop"\ncommand = "x"\nreplicas = 0\n[router]\nlisten = "nope"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert [path for path, _ in info.value.issues] == [
        "app.command",
        "app.replicas",
        "router.listen",
    ]


def test_defaults_are_usable() -> None:
    config = parse_config(APP)
    assert config.strategy.kind == "bluegreen"
    assert config.router.listen == "127.0.0.1:8080"
    assert config.strategy.bluegreen.keep_previous == 300.0
    assert config.strategy.rolling.max_surge == "25%"
    assert config.watch.max_error_rate == 0.02


@pytest.mark.parametrize(
    ("router", "slots"),
    [
        ("", False),  # off by default, whatever the kind
        ('kind = "haproxy"\n', False),
        ('kind = "haproxy"\nrelease_slots = true\n', True),
        ('kind = "caddy"\nrelease_slots = false\n', False),  # off is fine on any kind
    ],
)
def test_release_slots(router: str, slots: bool) -> None:
    from nonstop.config.load import validate_config

    config = parse_config(APP + "[router]\n" + router)
    assert config.router.release_slots is slots
    assert validate_config(to_wire(config)).router.release_slots is slots


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; run `nonstop init`"):
        load_config(tmp_path / "nonstop.toml")


def test_round_trip_through_json_keeps_the_meaning() -> None:
    """The CLI sends the validated config to the agent as JSON; it must validate the same."""
    from nonstop.config.load import validate_config

    config = parse_config(
        APP + '[strategy.canary]\nsteps = [{ weight = 5, pause = "10m" }, { pause = {} }]\n'
    )
    again = validate_config(to_wire(config))
    assert again == config
    # What the file did not set stays unset on the other side: a canary preset brings its
    # own watch only when the file has no [watch] table.
    assert "watch" not in again.model_fields_set
    with_watch = parse_config(APP + "[watch]\nduration = 30\n")
    assert "watch" in validate_config(to_wire(with_watch)).model_fields_set


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("500ms", 0.5),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("45", 45.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "ten", "5x", "1h 30", True, None, float("inf")])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.25, "250ms"), (90, "1m30s"), (3600, "1h"), (0, "0ms")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "total", "round_up", "count"),
    [
        # Kubernetes: surge rounds up, unavailable rounds down.
        ("25%", 5, True, 2),  # 1.25 -> 2
        ("25%", 5, False, 1),  # 1.25 -> 1
        ("10%", 3, False, 0),  # 0.3 -> 0
        ("100%", 4, True, 4),
        ("2", 10, True, 2),
    ],
)
def test_resolve_count(value: str, total: int, round_up: bool, count: int) -> None:
    assert resolve_count(value, total, round_up=round_up) == count


def test_init_writes_an_example_that_validates_and_refuses_to_overwrite(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    def init(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nonstop.cli", "init", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "NONSTOP_PROJECT": str(tmp_path)},
            check=False,
        )

    first = init()
    assert first.returncode == 0, first.stderr
    config = load_config(tmp_path / "nonstop.toml")
    assert config.app.command == "python3 app.py --port {port}"
    assert config.strategy.kind == "bluegreen"
    again = init()
    assert again.returncode == 2
    assert "exists; use --force" in again.stderr
    assert init("--force").returncode == 0
