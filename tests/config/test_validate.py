"""Release names and environments: one validator for the CLI, the API and nonstop.toml."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nonstop.config import load_config, parse_config, validate_env, validate_release_name
from nonstop.engine.releases import check_request
from nonstop.errors import ConfigError, UsageError

GOOD_NAMES = ["v1", "v1.2.3", "release_2026-01-01", "A", "9", "a" * 63]
BAD_NAMES = [
    ("v9\n", 'release name "v9\\n" is not valid'),
    ("v9\r", 'release name "v9\\r" is not valid'),
    ("v\x009", 'release name "v\\u00009" is not valid'),
    ("", 'release name "" is not valid'),
    (".hidden", 'release name ".hidden" is not valid'),
    ("-v1", 'release name "-v1" is not valid'),
    ("../etc", 'release name "../etc" is not valid'),
    ("a/b", 'release name "a/b" is not valid'),
    ("a b", 'release name "a b" is not valid'),
    ("é", 'release name "\\u00e9" is not valid'),
    ("a" * 64, "is not valid"),
    (7, "release name 7 is not valid"),
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_release_names(name: str) -> None:
    assert validate_release_name(name) == name


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_bad_release_names(name: object, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_release_name(name)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


BAD_ENVS = [
    ({"BAD KEY": "1"}, 'deploy: env: "BAD KEY": not a valid variable name'),
    ({"K\nX": "1"}, 'deploy: env: "K\\nX": not a valid variable name'),
    ({"A=B": "1"}, 'deploy: env: "A=B": not a valid variable name'),
    ({"": "1"}, 'deploy: env: "": not a valid variable name'),
    ({"1A": "1"}, 'deploy: env: "1A": not a valid variable name'),
    ({"A": "x\x00y"}, 'deploy: env: "A": the value contains a NUL character'),
    ({"A": 1}, 'deploy: env: "A": expected a string value, got 1'),
    ({"A": "x" * (128 * 1024 + 1)}, "the value is longer than 131072 characters"),
    ({"A" * 257: "1"}, "a variable name is at most 256 characters"),
    ({f"K{i}": "" for i in range(1001)}, "deploy: env: at most 1000 variables, got 1001"),
    (["A=1"], "deploy: env: expected a table of NAME = value strings, got ['A=1']"),
]


@pytest.mark.parametrize(("env", "message"), BAD_ENVS)
def test_bad_environments(env: object, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_env(env, "deploy: env")
    assert message in str(caught.value)


def test_good_environment_is_copied() -> None:
    env = {"DATABASE_URL": "postgres://x", "_X": "", "LANG": "C.UTF-8 é"}
    assert validate_env(env, "--env") == env


def test_deploy_request_checks_name_and_env() -> None:
    check_request("v1", {"A": "1"})
    with pytest.raises(UsageError, match="release name"):
        check_request("v1\n", {})
    with pytest.raises(UsageError, match='"A=B"'):
        check_request("v1", {"A=B": "1"})


@pytest.mark.parametrize(
    ("env_line", "message"),
    [
        ('"BAD KEY" = "1"', 'app.env: "BAD KEY": not a valid variable name'),
        ('"K\\nX" = "1"', 'app.env: "K\\nX": not a valid variable name'),
        ('A = "x\\u0000y"', 'app.env: "A": the value contains a NUL character'),
        ("A = 1", "app.env"),
    ],
)
def test_config_app_env_is_validated(env_line: str, message: str) -> None:
    text = f'[app]\nname = "x"\ncommand = "run {{port}}"\n[app.env]\n{env_line}\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = " + "[" * 5000 + "]" * 5000, "nonstop.toml: not valid TOML: nested too deep"),
        ("a = " + "{b = " * 2000 + "1" + "}" * 2000, "not valid TOML: nested too deep"),
        ("a = " + "9" * 5000, "not valid TOML: Exceeds the limit (4300 digits)"),
    ],
)
def test_toml_that_python_cannot_read_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert message in str(caught.value)


def test_config_file_must_be_a_small_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "nonstop.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(ConfigError, match="is more than the 1048576 allowed"):
        load_config(big)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(binary)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["deploy", "v9\n"], 'release name "v9\\n" is not valid'),
        (["deploy", "v9", "--env", "BAD KEY=1"], "--env"),
        (["deploy", "v9", "--env", "K\nX=1"], "--env"),
    ],
)
def test_cli_refuses_bad_names_and_env_before_anything(
    args: list[str],
    text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2 with the validator's message, without a project or an agent to talk to."""
    from nonstop.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    output = capsys.readouterr().err
    assert exit_info.value.code == 2, output
    assert text in output
    assert "Traceback" not in output
