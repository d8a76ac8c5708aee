"""Worked examples of the reference engine's corner cases, one row each. Every row is also
checked against the SDK's engine when it is installed, so the table cannot drift from it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nonstop.flags.engine import FlagEngine


def c(context_name: str, operator: str, value: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"contextName": context_name, "operator": operator, **extra}
    if value is not None:
        out["value"] = value
    return out


def only(*constraints: dict[str, Any]) -> list[dict[str, Any]]:
    """One default strategy with the constraints, then an unconstrained default strategy: the
    flag is on unless something in the first strategy turns the whole flag off."""
    return [{"name": "default", "constraints": list(constraints)}, {"name": "default"}]


def props(**values: Any) -> dict[str, Any]:
    return {"properties": values}


# (id, strategies, context, enabled)
ROWS: list[tuple[str, list[dict[str, Any]], dict[str, Any], bool]] = [
    # Values the reference engine cannot compile turn the whole flag off.
    ("num value not a number", only(c("n", "NUM_EQ", "abc")), props(n="1"), False),
    ("num value missing", only(c("n", "NUM_EQ", values=["5"])), props(n="5"), False),
    ("semver with leading zero", only(c("v", "SEMVER_EQ", "01.2.2")), props(v="1.2.2"), False),
    (
        "date with 2 fraction digits",
        only(c("currentTime", "DATE_AFTER", "2022-01-29T13:00:00.12Z")),
        {},
        False,
    ),
    ("unknown operator", only(c("x", "NOT_A_VALID_OPERATOR", "1")), {}, False),
    (
        "IN_CIDR without values",
        only(c("remoteAddress", "IN_CIDR", "10.0.0.0/8")),
        {"remoteAddress": "10.0.0.1"},
        False,
    ),
    ("STR_CONTAINS without values", only(c("x", "STR_CONTAINS", values=[])), props(x="a"), False),
    ("value ending in a backslash", only(c("x", "IN", values=["a\\"])), props(x="a\\"), False),
    ("context name with a quote", only(c('a"b', "IN", values=["1"])), {}, False),
    ("missing segment", [{"name": "default", "segments": [9]}, {"name": "default"}], {}, False),
    (
        "rollout above 100",
        [{"name": "flexibleRollout", "parameters": {"rollout": "150"}}, {"name": "default"}],
        {},
        False,
    ),
    # ... while some only make one part never match.
    ("v-prefixed version before anything else", only(c('a"b', "SEMVER_EQ", "v1.0.0")), {}, True),
    (
        "semver with a v prefix",
        [{"name": "default", "constraints": [c("v", "SEMVER_EQ", "v1.2.2")]}],
        props(v="v1.2.2"),
        False,
    ),
    (
        "rollout not a number",
        [{"name": "flexibleRollout", "parameters": {"rollout": "-5"}}, {"name": "default"}],
        {},
        True,
    ),
    ("invalid regex", only(c("userId", "REGEX", "(x")), {"userId": "x"}, True),
    # Parsing: Rust's, not Python's.
    (
        "num: Python-only underscore",
        [{"name": "default", "constraints": [c("n", "NUM_GTE", "5")]}],
        props(n="1_0"),
        False,
    ),
    (
        "num: Rust accepts inf",
        [{"name": "default", "constraints": [c("n", "NUM_GTE", "5")]}],
        props(n="inf"),
        True,
    ),
    (
        "num: surrounding spaces in the value are fine",
        [{"name": "default", "constraints": [c("n", "NUM_EQ", " 5 ")]}],
        props(n="5"),
        True,
    ),
    (
        "num: but not in the context",
        [{"name": "default", "constraints": [c("n", "NUM_EQ", "5")]}],
        props(n=" 5"),
        False,
    ),
    (
        "semver: build metadata ignored",
        [{"name": "default", "constraints": [c("v", "SEMVER_EQ", "1.2.2")]}],
        props(v="1.2.2+b1"),
        True,
    ),
    (
        "the value's shape picks the comparison",
        [{"name": "default", "constraints": [c("v", "NUM_EQ", "1.2.3")]}],
        props(v="1.2.3"),
        True,
    ),
    (
        "date: space separator and +0100",
        [
            {
                "name": "default",
                "constraints": [c("currentTime", "DATE_AFTER", "2022-01-29T13:00:00Z")],
            }
        ],
        {"currentTime": "2022-01-29 13:00:00+0100"},
        False,
    ),
    (
        "date: lower-case t and z, nanoseconds",
        [
            {
                "name": "default",
                "constraints": [c("currentTime", "DATE_AFTER", "2022-01-29T13:00:00Z")],
            }
        ],
        {"currentTime": "2022-01-29t13:00:00.000000001z"},
        True,
    ),
    # Context: a missing standard field is read from properties.
    (
        "userId from properties",
        [{"name": "default", "constraints": [c("userId", "IN", values=["7"])]}],
        props(userId="7"),
        True,
    ),
    (
        "top-level userId wins",
        [{"name": "default", "constraints": [c("userId", "IN", values=["7"])]}],
        {"userId": "8", **props(userId="7")},
        False,
    ),
    (
        "non-string context values",
        [{"name": "default", "constraints": [c("userId", "IN", values=["7"])]}],
        {"userId": 7},
        True,
    ),
    # Strings and regexes.
    (
        "IN ignores caseInsensitive",
        [{"name": "default", "constraints": [c("x", "IN", values=["A"], caseInsensitive=True)]}],
        props(x="a"),
        False,
    ),
    (
        "regex $ is end of text",
        [{"name": "default", "constraints": [c("userId", "REGEX", "^abc$")]}],
        {"userId": "abc\n"},
        False,
    ),
    (
        "regex POSIX classes are ASCII",
        [{"name": "default", "constraints": [c("userId", "REGEX", "^[[:alpha:]]+$")]}],
        {"userId": "é"},
        False,
    ),
    (
        "regex \\d is Unicode",
        [{"name": "default", "constraints": [c("userId", "REGEX", "^\\d+$")]}],
        {"userId": "١٢٣"},
        True,
    ),
    (
        "regex uses value before values",
        [{"name": "default", "constraints": [c("userId", "REGEX", "^a", values=["^b"])]}],
        {"userId": "b"},
        False,
    ),
    (
        "regex without value: the empty pattern, values ignored",
        [{"name": "default", "constraints": [c("userId", "REGEX", values=["^x"])]}],
        {"userId": "b"},
        True,
    ),
    (
        "... which still needs a value in the context",
        [{"name": "default", "constraints": [c("userId", "REGEX", values=["^x"])]}],
        {},
        False,
    ),
    (
        "quotes in values are fine",
        [{"name": "default", "constraints": [c("x", "IN", values=['a"b'])]}],
        props(x='a"b'),
        True,
    ),
    (
        "mapped IPv6 is not IPv4",
        [{"name": "remoteAddress", "parameters": {"IPs": "10.0.0.0/8"}}],
        {"remoteAddress": "::ffff:10.1.1.1"},
        False,
    ),
    (
        "range with host bits",
        [{"name": "remoteAddress", "parameters": {"IPs": "10.1.2.3/8"}}],
        {"remoteAddress": "10.200.0.1"},
        True,
    ),
]


@pytest.mark.parametrize(
    ("strategies", "context", "enabled"), [pytest.param(*r[1:], id=r[0]) for r in ROWS]
)
def test_corner_case(
    strategies: list[dict[str, Any]], context: dict[str, Any], enabled: bool
) -> None:
    doc = {"version": 1, "features": [{"name": "f", "enabled": True, "strategies": strategies}]}
    engine = FlagEngine.from_unleash(doc, strict=False)
    assert engine.is_enabled("f", context) is enabled
    try:
        from yggdrasil_engine.engine import UnleashEngine
    except ImportError:  # pragma: no cover - the SDK is a test dependency
        return
    sdk = UnleashEngine()
    sdk.take_state(json.dumps(doc))
    assert sdk.check_enabled("f", context).is_enabled is enabled


# Variant picking: weights, seeds and stickiness, as worked examples.
def test_variant_zero_weight_is_skipped_even_without_stickiness() -> None:
    # No appName in the context: the target is drawn from 1..total, never 0, so the
    # weight-0 variant first in the list is never picked.
    doc = {
        "features": [
            {
                "name": "f",
                "enabled": True,
                "strategies": [],
                "variants": [
                    {"name": "a", "weight": 0, "stickiness": "appName"},
                    {"name": "b", "weight": 1},
                ],
            }
        ]
    }
    engine = FlagEngine.from_unleash(doc)
    assert {engine.get_variant("f", {})["name"] for _ in range(50)} == {"b"}


def test_variant_weights_adding_up_to_zero_fail_the_call_like_the_sdk() -> None:
    doc = {"features": [{"name": "f", "enabled": True, "variants": [{"name": "a", "weight": 0}]}]}
    engine = FlagEngine.from_unleash(doc, strict=False)
    assert engine.is_enabled("f", {"userId": "1"}) is True
    assert engine.get_variant("f", {"userId": "1"}) == {
        "name": "disabled",
        "enabled": False,
        "feature_enabled": False,
    }


def test_a_parent_rollout_without_group_id_hashes_with_the_childs_name() -> None:
    # mmh3("parent:1") % 100 + 1 == 33 and mmh3("child:1") % 100 + 1 == 67: the parent's 50%
    # rollout holds when it is asked directly, and fails when the child asks for it.
    doc = {
        "version": 1,
        "features": [
            {
                "name": "parent",
                "enabled": True,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {"rollout": "50", "stickiness": "userId"},
                    }
                ],
            },
            {
                "name": "child",
                "enabled": True,
                "strategies": [],
                "dependencies": [{"feature": "parent"}],
            },
        ],
    }
    ctx = {"userId": "1"}
    engine = FlagEngine.from_unleash(doc)
    assert (engine.is_enabled("parent", ctx), engine.is_enabled("child", ctx)) == (True, False)
    try:
        from yggdrasil_engine.engine import UnleashEngine
    except ImportError:  # pragma: no cover - the SDK is a test dependency
        return
    sdk = UnleashEngine()
    sdk.take_state(json.dumps(doc))
    assert (
        sdk.check_enabled("parent", ctx).is_enabled,
        sdk.check_enabled("child", ctx).is_enabled,
    ) == (True, False)
