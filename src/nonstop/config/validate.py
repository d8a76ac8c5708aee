"""Validators shared by the CLI, the agent API and nonstop.toml: one rule, one message.

Each raises :class:`~nonstop.errors.UsageError` naming what is wrong and where (exit code 2 in
the CLI, 400 from the API), before anything changes. Values are shown JSON-quoted, so a
control character is visible (``"v9\\n"``) instead of breaking the line.

- release names: ``[A-Za-z0-9][A-Za-z0-9_.-]{0,62}``, the whole string (a trailing newline
  does not slip through a ``$``): they become directory names under ``.nonstop/releases/``.
- environment: POSIX names ``[A-Za-z_][A-Za-z0-9_]*`` (at most 256 characters); values are
  text without NUL (at most 128 KiB each, Linux's limit for one string); at most 1,000 keys.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

from nonstop.errors import UsageError

RELEASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_NAME = 256
MAX_ENV_VALUE = 128 * 1024
MAX_ENV_KEYS = 1000


def shown(value: object, limit: int = 80) -> str:
    """``value`` JSON-quoted and cut to ``limit`` characters, safe to print on one line."""
    text = json.dumps(value, ensure_ascii=True) if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 4] + '..."'


def release_name_problem(name: object) -> str | None:
    """Why ``name`` is not a release name, or None when it is one."""
    if isinstance(name, str) and RELEASE_NAME.fullmatch(name):
        return None
    return (
        f'release name {shown(name)} is not valid: use letters, digits, ".", "_" or "-" '
        "(at most 63, starting with a letter or digit)"
    )


def validate_release_name(name: object) -> str:
    """``name`` when it is a valid release name; else :class:`UsageError`."""
    problem = release_name_problem(name)
    if problem is not None:
        raise UsageError(problem)
    assert isinstance(name, str)
    return name


def env_problems(env: object) -> list[tuple[str, str]]:
    """``(key, message)`` for every bad entry of an environment mapping; empty when clean."""
    if not isinstance(env, Mapping):
        return [("", f"expected a table of NAME = value strings, got {shown(env)}")]
    if len(env) > MAX_ENV_KEYS:
        return [("", f"at most {MAX_ENV_KEYS} variables, got {len(env)}")]
    problems = []
    for key, value in env.items():
        name = shown(key)
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            problems.append(
                (
                    name,
                    "not a valid variable name: use letters, digits and _, not starting "
                    "with a digit",
                )
            )
        elif len(key) > MAX_ENV_NAME:
            problems.append((name[:40], f"a variable name is at most {MAX_ENV_NAME} characters"))
        elif not isinstance(value, str):
            problems.append((name, f"expected a string value, got {shown(value)}"))
        elif "\x00" in value:
            problems.append((name, "the value contains a NUL character"))
        elif len(value) > MAX_ENV_VALUE:
            problems.append((name, f"the value is longer than {MAX_ENV_VALUE} characters"))
    return problems


def validate_env(env: object, where: str) -> dict[str, str]:
    """A clean copy of ``env``; else :class:`UsageError` listing each bad entry under ``where``
    (e.g. ``--env``, ``deploy: env``)."""
    problems = env_problems(env)
    if problems:
        lines = [f"{where}: {key}: {msg}" if key else f"{where}: {msg}" for key, msg in problems]
        raise UsageError("\n".join(lines))
    assert isinstance(env, Mapping)
    return dict(env)


# What a release copy leaves out by default (docs/config.md, "What a release copies").
DEFAULT_COPY_EXCLUDE = (".git", "__pycache__", "*.pyc", ".venv", "node_modules")
ALWAYS_EXCLUDED = ".nonstop"


def copy_excludes(include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """The name patterns a release copy leaves out: the defaults less ``copy_include``, plus
    ``copy_exclude``; ``.nonstop`` always (a release must not contain the releases)."""
    kept = [p for p in DEFAULT_COPY_EXCLUDE if p not in include]
    return [ALWAYS_EXCLUDED, *kept, *(p for p in exclude if p not in kept)]


def excluded_path_problem(
    command: str, cwd: str | None, include: Sequence[str], exclude: Sequence[str]
) -> str | None:
    """Why ``command`` or ``cwd`` cannot work in a release copy (a relative path through a
    directory the copy leaves out, e.g. ``.venv/bin/gunicorn``), or None."""
    patterns = copy_excludes(include, exclude)
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    candidates = [("command", t.rpartition("=")[2]) for t in tokens if "/" in t]
    if cwd:
        candidates.append(("cwd", cwd))
    for key, path in candidates:
        if path.startswith("/"):
            continue
        for part in PurePosixPath(path).parts:
            hit = next((p for p in patterns if fnmatch.fnmatch(part, p)), None)
            if hit is not None:
                return (
                    f'{key}: "{path}" is under "{part}", which a release copy leaves out '
                    f'(pattern "{hit}"); add "{part}" to [app] copy_include, or create it '
                    "in the release with [app] build"
                )
    return None


def host_port(value: str) -> tuple[str, int] | None:
    """``"127.0.0.1:8470"`` -> ("127.0.0.1", 8470), ``"[::1]:0"`` -> ("::1", 0); None when
    ``value`` is not an IP address and a port (0 to 65535)."""
    import ipaddress

    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    if not sep or not port.isdigit() or int(port) > 65535:
        return None
    return host, int(port)


def dashboard_listen_problem(
    listen: str | None, tls_cert: str | None, tls_key: str | None
) -> str | None:
    """Why ``[dashboard]`` cannot listen as set, or None. A loopback address needs nothing
    more; any other needs TLS (a session cookie must not cross a network in clear text)."""
    import ipaddress

    if (tls_cert is None) != (tls_key is None):
        return "tls_cert and tls_key go together: set both, or neither"
    if listen is None:
        return None
    parsed = host_port(listen)
    if parsed is None:
        return f'listen: expected "127.0.0.1:PORT" (an IP address and a port), got {shown(listen)}'
    if not ipaddress.ip_address(parsed[0]).is_loopback and tls_cert is None:
        return (
            f"listen: {shown(listen)} is not a loopback address: set tls_cert and tls_key to "
            "serve the dashboard beyond this machine, or reach it through an SSH tunnel"
        )
    return None
