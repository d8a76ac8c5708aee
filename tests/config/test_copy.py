"""What a release copy takes from the project, and commands that point where it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.config import parse_config
from nonstop.config.validate import copy_excludes, excluded_path_problem
from nonstop.engine.releases import copy_release
from nonstop.errors import ConfigError

PROBLEMS = [
    # (command, cwd, include, exclude, expected fragment or None)
    (
        ".venv/bin/gunicorn -b 127.0.0.1:{port} app:app",
        None,
        [],
        [],
        'command: ".venv/bin/gunicorn" is under ".venv"',
    ),
    ("./.venv/bin/python app.py {port}", None, [], [], 'is under ".venv"'),
    ("node node_modules/.bin/next start -p {port}", None, [], [], 'is under "node_modules"'),
    ("python app.py {port}", "node_modules/app", [], [], 'cwd: "node_modules/app"'),
    ("x --config=build/app.cfg {port}", None, [], ["build"], 'is under "build"'),
    ("python3 app.py {port}", None, [], [], None),
    ("/opt/venv/bin/gunicorn {port}", None, [], [], None),  # outside the project
    (".venv/bin/gunicorn {port}", None, [".venv"], [], None),  # included again
    ("python3 .git-tools/run {port}", None, [], [], None),  # ".git-tools" is not ".git"
    ("python3 'unbalanced {port}", None, [], [], None),
]


@pytest.mark.parametrize(("command", "cwd", "include", "exclude", "expected"), PROBLEMS)
def test_excluded_path_problem(
    command: str, cwd: str | None, include: list[str], exclude: list[str], expected: str | None
) -> None:
    problem = excluded_path_problem(command, cwd, include, exclude)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert expected in problem


def test_excludes_defaults_include_and_exclude() -> None:
    assert copy_excludes([], []) == [
        ".nonstop",
        ".git",
        "__pycache__",
        "*.pyc",
        ".venv",
        "node_modules",
    ]
    assert copy_excludes([".venv", ".nonstop"], ["*.log"]) == [
        ".nonstop",
        ".git",
        "__pycache__",
        "*.pyc",
        "node_modules",
        "*.log",
    ]


def test_config_refuses_a_command_under_an_excluded_path() -> None:
    text = '[app]\nname = "x"\ncommand = ".venv/bin/gunicorn -b :{port} app:app"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value) == (
        'nonstop.toml: app.command: ".venv/bin/gunicorn" is under ".venv", which a release '
        'copy leaves out (pattern ".venv"); add ".venv" to [app] copy_include, or create it '
        "in the release with [app] build"
    )
    # a build step may create it inside the release: then it is the user's call
    assert parse_config(text + 'build = "python3 -m venv .venv"\n').app.build


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    for name in ("app.py", ".venv/bin/gunicorn", "node_modules/x.js", "logs/a.log", "keep.log"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x")
    return project


@pytest.mark.parametrize(
    ("app_lines", "copied"),
    [
        ("", ["app.py", "keep.log", "logs/a.log"]),
        (
            'copy_include = [".venv"]\n',
            [".venv/bin/gunicorn", "app.py", "keep.log", "logs/a.log"],
        ),
        ('copy_exclude = ["logs", "*.log"]\n', ["app.py"]),
    ],
)
def test_copy_release_follows_include_and_exclude(
    tmp_path: Path, app_lines: str, copied: list[str]
) -> None:
    config = parse_config(f'[app]\nname = "x"\ncommand = "python3 app.py {{port}}"\n{app_lines}')
    cwd = copy_release(tmp_path / "releases", "v1", _project(tmp_path), config)
    files = sorted(p.relative_to(cwd).as_posix() for p in cwd.rglob("*") if p.is_file())
    assert files == copied
