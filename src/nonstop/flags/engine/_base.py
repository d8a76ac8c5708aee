"""Building blocks shared by the flag compiler: context access, the outside world
(randomness, clock, host name) and the quirks of the reference engine's rule language."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from nonstop.flags.engine._problems import Problem

Context = Mapping[str, Any]
Predicate = Callable[[Context], bool]
Getter = Callable[[Context], "str | None"]

VARIANT_SEED: Final = 86028157
STANDARD_FIELDS: Final = (
    "userId",
    "sessionId",
    "remoteAddress",
    "environment",
    "appName",
    "currentTime",
)
STRING_OPERATORS: Final = ("IN", "NOT_IN", "STR_CONTAINS", "STR_STARTS_WITH", "STR_ENDS_WITH")
ORDINAL_OPERATORS: Final = {
    "NUM_EQ": "==",
    "NUM_GT": ">",
    "NUM_GTE": ">=",
    "NUM_LT": "<",
    "NUM_LTE": "<=",
    "DATE_AFTER": ">",
    "DATE_BEFORE": "<",
    "SEMVER_EQ": "==",
    "SEMVER_GT": ">",
    "SEMVER_GTE": ">=",
    "SEMVER_LT": "<",
    "SEMVER_LTE": "<=",
}
OPERATORS: Final = (*STRING_OPERATORS, *ORDINAL_OPERATORS, "REGEX", "IN_CIDR")
STRATEGIES: Final = (
    "default",
    "userWithId",
    "gradualRolloutUserId",
    "gradualRolloutSessionId",
    "gradualRolloutRandom",
    "flexibleRollout",
    "remoteAddress",
    "applicationHostname",
)
EPSILON: Final = 2.220446049250313e-16


def never(ctx: Context) -> bool:
    return False


def always(ctx: Context) -> bool:
    return True


class VariantFailure(Exception):
    """Variants whose weights add up to 0: the reference engine fails the whole call."""


class FlagOff(Exception):
    """Raised while compiling a part the reference engine cannot compile: the flag is off."""


@dataclass(frozen=True)
class Environment:
    """What evaluation may need from outside: randomness, a clock, the host name."""

    rng: random.Random
    clock: Callable[[], float] | None
    hostname: str | None


# ---------------------------------------------------------------- context access


def to_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_getter(name: str) -> Getter:
    """Read a context field: the top-level field first, then ``properties[name]``."""
    if name in STANDARD_FIELDS:

        def get_standard(ctx: Context) -> str | None:
            value = ctx.get(name)
            if value is None:
                props = ctx.get("properties")
                if not props:
                    return None
                value = props.get(name)
                if value is None:
                    return None
            return value if value.__class__ is str else to_str(value)

        return get_standard

    def get_property(ctx: Context) -> str | None:
        props = ctx.get("properties")
        if not props:
            return None
        value = props.get(name)
        if value is None or value.__class__ is str:
            return value
        return to_str(value)

    return get_property


def now_text(env: Environment) -> Callable[[], str] | None:
    """ "Now" as the reference engine writes it when the context has no currentTime."""
    clock = env.clock
    if clock is None:
        return None

    def now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))

    return now


# ---------------------------------------------------------------- rule-language quirks


def escaped_string_ok(value: str) -> bool:
    """An escaped, quoted value survives the reference rule language unless it ends in `\\`."""
    return not value.endswith("\\")


def unescaped_string(value: str) -> str | None:
    """What the reference engine reads back from ``"{value}"`` written without escaping."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith('\\"', i):
            out.append('"')
            i += 2
        elif value[i] == '"':
            return None
        else:
            out.append(value[i])
            i += 1
    if value.endswith("\\") and not value.endswith('\\"'):
        return None
    return "".join(out)


def trim_rule_whitespace(value: str) -> str:
    return value.strip(" \t")


# ---------------------------------------------------------------- problems


@dataclass
class Problems:
    items: list[Problem] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message))


def quote(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
