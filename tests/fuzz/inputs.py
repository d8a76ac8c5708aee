"""Hypothesis strategies for what users hand nonstop, and the checks each input must pass:
a config file, a flag document to import, a migration file to lint.

The contract for every input: it is accepted, or refused with the one documented error type
(a `nonstop.errors.UsageError`) - never another exception, never a traceback, never a hang.
The same checks run with a small seeded budget in `make test` (tests/fuzz) and with a long
one in benchmarks/fuzz_inputs.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from nonstop.config import parse_config
from nonstop.config.load import load_config
from nonstop.errors import UsageError
from nonstop.flags.engine import FlagEngine
from nonstop.flags.limits import load_json
from nonstop.flags.store import FlagStore
from nonstop.migrate.lint import lint_text

# -- TOML --------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` as a TOML inline value (tables inline), enough to write any config shape."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in data.items())


KEYS = [
    "app", "name", "command", "replicas", "cwd", "env", "build", "stop_signal", "stop_timeout",
    "drain_timeout", "copy_include", "copy_exclude", "health", "path", "interval", "router",
    "listen", "kind", "strategy", "bluegreen", "rolling", "canary", "steps", "weight", "pause",
    "analysis", "metric", "max", "watch", "retention", "releases", "log_max_size", "log_keep",
    "log_max_age", "migrations", "flags", "agent", "preset", "max_surge", "max_unavailable",
]  # fmt: skip
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["10s", "5m", "1h30m", "25%", "x {port}", ".venv/bin/x {port}", "10MiB", "SIGTERM",
         "canary", "rolling", "bluegreen", "127.0.0.1:8080", "/health", "v1\n", "A=B", "\x00"]
    ),
)  # fmt: skip
CONFIG_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5
        ),
    ),
    max_leaves=20,
)
VALID_APP = {"name": "shop", "command": "python3 app.py --port {port}"}


@st.composite
def config_documents(draw: st.DrawFn) -> str:
    """Mostly config-shaped TOML (known tables and keys, wild values), sometimes raw text,
    deep nesting or huge numbers."""
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{b = ", "}")]))
        return "a = " + opener * depth + "1" + closer * depth + "\n"
    if kind == 2:
        digits = draw(st.integers(4000, 6000))
        return f'[app]\nname = "x"\ncommand = "x {{port}}"\nreplicas = {"9" * digits}\n'

    data: dict[str, Any] = draw(st.dictionaries(st.sampled_from(KEYS), CONFIG_VALUES, max_size=6))
    if draw(st.booleans()):
        app = dict(VALID_APP)
        app.update(draw(st.dictionaries(st.sampled_from(KEYS), CONFIG_VALUES, max_size=3)))
        data["app"] = app
    return toml_document(data)


def check_config(text: str) -> None:
    with contextlib.suppress(UsageError):
        parse_config(text)


def check_config_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nonstop.toml"
        path.write_bytes(data)
        with contextlib.suppress(UsageError):
            load_config(path)


# -- flag documents ----------------------------------------------------------------------------

OPERATORS = [
    "IN", "NOT_IN", "STR_CONTAINS", "STR_STARTS_WITH", "STR_ENDS_WITH", "NUM_EQ", "NUM_GT",
    "NUM_LT", "DATE_AFTER", "DATE_BEFORE", "SEMVER_EQ", "SEMVER_GT", "REGEX", "IN_CIDR", "LIKE",
]  # fmt: skip
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["^(a+)+$", "(?=a)", "[[:alpha:]]+", "\\b{start}x", "a{1001}", "../x", ""]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)


@st.composite
def constraints(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "contextName": draw(st.sampled_from(["userId", "appName", "currentTime", "x"])),
        "operator": draw(st.sampled_from(OPERATORS)),
        "values": draw(st.one_of(st.none(), st.lists(JSON_SCALARS, max_size=3))),
        "value": draw(JSON_SCALARS),
        "inverted": draw(st.one_of(st.booleans(), JSON_SCALARS)),
        "caseInsensitive": draw(st.booleans()),
    }


@st.composite
def features(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    strategy = {
        "name": draw(
            st.sampled_from(["default", "flexibleRollout", "userWithId", "remoteAddress"])
        ),
        "parameters": draw(
            st.dictionaries(
                st.sampled_from(["rollout", "stickiness", "groupId", "userIds", "IPs"]),
                st.one_of(st.text(max_size=10), JSON_SCALARS),
                max_size=3,
            )
        ),
        "constraints": draw(st.lists(constraints(), max_size=3)),
        "segments": draw(st.one_of(st.none(), st.lists(st.integers(-5, 5), max_size=2))),
    }
    return {
        "name": draw(
            st.one_of(st.from_regex(r"[a-z][a-z0-9.-]{0,12}", fullmatch=True), JSON_SCALARS)
        ),
        "enabled": draw(st.one_of(st.booleans(), JSON_SCALARS)),
        "strategies": draw(st.lists(st.just(strategy), max_size=2)),
        "variants": draw(st.lists(JSON_VALUES, max_size=2)),
    }


@st.composite
def flag_documents(draw: st.DrawFn) -> bytes:
    """Bytes a user may pass to `nonstop flags import`: mostly Unleash-shaped JSON."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=100))
    if kind == 1:
        depth = draw(st.integers(1, 3000))
        return b"[" * depth + b"]" * draw(st.integers(0, depth))
    doc: dict[str, Any] = {"version": 1, "features": draw(st.lists(features(), max_size=4))}
    if draw(st.booleans()):
        doc["segments"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"id": st.integers(-3, 3), "constraints": st.lists(constraints(), max_size=2)}
                ),
                max_size=2,
            )
        )
    return json.dumps(doc).encode()


def flag_checker() -> tuple[Callable[[bytes], None], Callable[[], None]]:
    """A check against one real store (in a temporary directory) and its cleanup."""
    tmp = tempfile.TemporaryDirectory()
    store = FlagStore(Path(tmp.name) / "state.db")

    def check(data: bytes) -> None:
        try:
            document = load_json(data, "flags.json")
            if isinstance(document, dict):
                store.replace_document(document)
                engine = FlagEngine.from_unleash(store.document())
                for name in [f["name"] for f in store.features()]:
                    engine.is_enabled(name, {"userId": "a" * 50 + "!"})
        except UsageError:
            pass

    def close() -> None:
        store.close()
        tmp.cleanup()

    return check, close


# -- SQL -----------------------------------------------------------------------------------------

SQL_PARTS = [
    "SELECT 1;", "DROP TABLE users;", "ALTER TABLE users ADD COLUMN x int;",
    "ALTER TABLE users ALTER COLUMN x SET NOT NULL;", "CREATE INDEX i ON users (a);",
    "CREATE INDEX CONCURRENTLY i ON users (a);", "SET lock_timeout = '1s';",
    "UPDATE users SET a = 1 WHERE id BETWEEN :lo AND :hi;", "-- nonstop: phase=contract\n",
    "-- nonstop: phase=backfill table=users key=id\n", "-- nonstop: down\n",
    "-- nonstop-lint: ignore rename-column\n", "BEGIN;", "COMMIT;", "$$", "/*", "*/", "'", "\"",
    "\x00", "\n", ";", "(", "ALTER TABLE users RENAME COLUMN a TO b;", "DO $$ BEGIN END $$;",
]  # fmt: skip


@st.composite
def sql_files(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:  # deep nesting, long chains, huge numbers
        n = draw(st.integers(1, 5000))
        return draw(
            st.sampled_from(
                [
                    "SELECT " + "(" * n + "1" + ")" * n + ";",
                    "SELECT " + " + ".join(["1"] * n) + ";",
                    "SELECT " + "9" * n + ";",
                    "SELECT ARRAY" + "[" * n + "1" + "]" * n + ";",
                ]
            )
        )
    parts = draw(st.lists(st.one_of(st.sampled_from(SQL_PARTS), st.text(max_size=10)), max_size=12))
    return "".join(parts)


def check_sql(text: str) -> None:
    for phase in ("expand", "backfill", "contract"):
        with contextlib.suppress(UsageError):
            lint_text(text, "0001.sql", phase=phase)  # type: ignore[arg-type]


EXAMPLE_CONFIG = resources.files("nonstop.cli").joinpath("example.toml").read_text()
