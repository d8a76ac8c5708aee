"""Bad flag documents: every problem is named with its path, all of them at once.

Strict import raises FlagDocumentError (a UsageError: exit code 2); `validate` and lenient
import return the same list without raising."""

from __future__ import annotations

from typing import Any

import pytest

from nonstop.errors import UsageError
from nonstop.flags.engine import FlagDocumentError, FlagEngine, validate


def flag(name: str = "x", **fields: Any) -> dict[str, Any]:
    return {"name": name, "enabled": True, **fields}


def doc(*features: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": 1, "features": list(features), **extra}


def constrained(*constraints: dict[str, Any]) -> dict[str, Any]:
    return doc(flag(strategies=[{"name": "default", "constraints": list(constraints)}]))


X = 'features[0] "x": '
S0 = X + "strategies[0]"
C0 = S0 + ".constraints[0]"
OPS = (
    "IN, NOT_IN, STR_CONTAINS, STR_STARTS_WITH, STR_ENDS_WITH, NUM_EQ, NUM_GT, NUM_GTE, "
    "NUM_LT, NUM_LTE, DATE_AFTER, DATE_BEFORE, SEMVER_EQ, SEMVER_GT, SEMVER_GTE, SEMVER_LT, "
    "SEMVER_LTE, REGEX, IN_CIDR"
)

CASES: list[tuple[str, Any, list[str]]] = [
    (
        "rollout out of range names the flag and the field",
        doc(
            flag("a"),
            flag("b"),
            flag("c"),
            flag(
                "checkout",
                strategies=[{"name": "flexibleRollout", "parameters": {"rollout": "150"}}],
            ),
        ),
        [
            'features[3] "checkout": strategies[0].parameters.rollout: expected 0..100, got "150"'
            " (the flag is always off)"
        ],
    ),
    (
        "rollout that is not a whole number",
        doc(flag(strategies=[{"name": "flexibleRollout", "parameters": {"rollout": "12.5"}}])),
        [S0 + '.parameters.rollout: expected 0..100, got "12.5" (the strategy never matches)'],
    ),
    (
        "rollout given as a JSON number",
        doc(flag(strategies=[{"name": "flexibleRollout", "parameters": {"rollout": 50}}])),
        [S0 + ".parameters.rollout: expected a string, got 50"],
    ),
    ("not an object", [], ["document: expected an object, got a list"]),
    ("features not a list", {"features": {}}, ["features: expected a list, got an object"]),
    (
        "feature without a name",
        doc({"enabled": True}),
        ["features[0].name: expected a string, got null"],
    ),
    ("enabled missing", doc({"name": "x"}), [X + "enabled: expected true or false, got null"]),
    (
        "every shape problem of a feature, not just the first",
        doc(
            flag(
                enabled="yes",
                strategies=[{"name": 1}, {"name": "default", "parameters": {"a": 1}}],
                variants=[{"name": "v"}],
            )
        ),
        [
            X + 'enabled: expected true or false, got "yes"',
            S0 + ".name: expected a string, got 1",
            X + "strategies[1].parameters.a: expected a string, got 1",
            X + "variants[0].weight: expected a whole number, got null",
        ],
    ),
    (
        "unknown operator and invalid regex in one strategy",
        constrained(
            {"contextName": "a", "operator": "LIKE", "values": ["1"]},
            {"contextName": "a", "operator": "REGEX", "value": "(?=a)"},
        ),
        [
            C0
            + f'.operator: unknown operator "LIKE", expected one of {OPS} (the flag is always off)',
            S0
            + '.constraints[1].value: invalid regular expression "(?=a)": unsupported group syntax'
            " (look-around, atomic or comment group) at offset 2 (it never matches)",
        ],
    ),
    (
        "number expected",
        constrained({"contextName": "a", "operator": "NUM_GT", "value": "ten"}),
        [C0 + '.value: expected a number, got "ten" (the flag is always off)'],
    ),
    (
        "date without a time",
        constrained(
            {"contextName": "currentTime", "operator": "DATE_AFTER", "value": "2022-01-01"}
        ),
        [
            C0 + ".value: expected an RFC 3339 date like 2022-01-29T13:00:00.000Z,"
            ' got "2022-01-01" (the flag is always off)'
        ],
    ),
    (
        "semantic version with a v",
        constrained({"contextName": "v", "operator": "SEMVER_GT", "value": "v1.0.0"}),
        [
            C0 + '.value: expected a semantic version without a "v" prefix, got "v1.0.0"'
            " (it never matches)"
        ],
    ),
    (
        "ordinal operator without a value",
        constrained({"contextName": "a", "operator": "NUM_EQ", "values": ["1"]}),
        [C0 + ".value: NUM_EQ needs a value (the flag is always off)"],
    ),
    (
        "values not a list",
        constrained({"contextName": "a", "operator": "IN", "values": "1"}),
        [C0 + '.values: expected a list, got "1"'],
    ),
    (
        "CIDR entries that are not addresses",
        constrained(
            {
                "contextName": "remoteAddress",
                "operator": "IN_CIDR",
                "values": ["10.0.0.0/8", "10.0.0.0/33"],
            }
        ),
        [C0 + '.values[1]: expected an IP address or CIDR range, got "10.0.0.0/33" (ignored)'],
    ),
    (
        "negative weight",
        doc(flag(variants=[{"name": "v", "weight": -1}])),
        [X + "variants[0].weight: expected a weight >= 0, got -1"],
    ),
    (
        "weights adding up to zero",
        doc(flag(variants=[{"name": "v", "weight": 0}])),
        [X + "variants: variant weights add up to 0 (asking for a variant fails)"],
    ),
    (
        "custom strategy",
        doc(flag(strategies=[{"name": "fancy"}])),
        [
            S0 + '.name: unknown strategy "fancy", expected one of default, userWithId, '
            "gradualRolloutUserId, gradualRolloutSessionId, gradualRolloutRandom, flexibleRollout, "
            "remoteAddress, applicationHostname (it never matches)"
        ],
    ),
    (
        "duplicate names",
        doc(flag(), flag(enabled=False)),
        ['features[1] "x": duplicate feature name (the last one wins)'],
    ),
    (
        "segment id not a number",
        doc(segments=[{"id": "1"}]),
        ['segments[0].id: expected a whole number, got "1"'],
    ),
    (
        "unknown segment",
        doc(flag(strategies=[{"name": "default", "segments": [7]}])),
        [S0 + ".segments: unknown segment 7 (the flag is always off)"],
    ),
    (
        "problem inside a segment names the segment",
        doc(
            segments=[
                {"id": 4, "constraints": [{"contextName": "a", "operator": "NUM_LT", "value": "x"}]}
            ]
        ),
        [],  # an unused segment is not compiled
    ),
    (
        "dependency on an unknown feature",
        doc(flag(dependencies=[{"feature": "nope"}])),
        [X + 'dependencies[0].feature: unknown feature "nope" (the flag is never enabled)'],
    ),
    (
        "dependency chains",
        doc(
            flag("a"),
            flag("b", dependencies=[{"feature": "a"}]),
            flag("x", dependencies=[{"feature": "b"}]),
        ),
        [
            'features[2] "x": dependencies[0].feature: "b" has dependencies of its own'
            " (the flag is never enabled)"
        ],
    ),
    (
        "missing percentage",
        doc(flag(strategies=[{"name": "gradualRolloutUserId", "parameters": {"groupId": "g"}}])),
        [S0 + ".parameters: missing percentage (the strategy never matches)"],
    ),
    (
        "unknown delta event",
        {"events": [{"type": "feature-renamed"}]},
        ['events[0].type: unknown event type "feature-renamed" (ignored)'],
    ),
]


@pytest.mark.parametrize(("document", "expected"), [pytest.param(d, e, id=i) for i, d, e in CASES])
def test_validate_lists_every_problem(document: Any, expected: list[str]) -> None:
    assert [str(p) for p in validate(document)] == expected


@pytest.mark.parametrize(
    ("document", "expected"), [pytest.param(d, e, id=i) for i, d, e in CASES if e]
)
def test_strict_import_raises_a_usage_error_with_all_of_them(
    document: Any, expected: list[str]
) -> None:
    with pytest.raises(FlagDocumentError) as caught:
        FlagEngine.from_unleash(document)
    assert isinstance(caught.value, UsageError)
    assert caught.value.exit_code == 2
    assert [str(p) for p in caught.value.problems] == expected
    assert str(caught.value).splitlines()[1:] == [f"  {line}" for line in expected]


def test_segment_problems_are_named_at_the_segment_when_used() -> None:
    document = doc(
        flag(strategies=[{"name": "default", "segments": [4]}]),
        segments=[
            {"id": 4, "constraints": [{"contextName": "a", "operator": "NUM_LT", "value": "x"}]}
        ],
    )
    assert [str(p) for p in validate(document)] == [
        'segments[0] (id 4): constraints[0].value: expected a number, got "x"'
        " (the flag is always off)"
    ]


def test_lenient_import_keeps_the_good_flags_and_evaluates_the_rest_like_the_sdk() -> None:
    document = doc(
        flag("good", strategies=[{"name": "default"}]),
        flag("bad", strategies=[{"name": "flexibleRollout", "parameters": {"rollout": "150"}}]),
        {"name": "broken"},
    )
    engine = FlagEngine.from_unleash(document, strict=False)
    assert engine.is_enabled("good") is True
    assert engine.is_enabled("bad") is False
    assert "broken" not in engine
    assert engine.is_enabled("broken", default=True) is True
    assert len(engine.problems) == 2
