"""The engine's public API: reasons, defaults, delta updates and the injected outside world."""

from __future__ import annotations

import random
from typing import Any

import pytest

from nonstop.flags import FlagEngine as ReExported
from nonstop.flags.engine import REASONS, FlagEngine, Resolution


def one_flag(strategies: list[dict[str, Any]] | None = None, **fields: Any) -> FlagEngine:
    feature: dict[str, Any] = {"name": "f", "enabled": True, **fields}
    if strategies is not None:
        feature["strategies"] = strategies
    return FlagEngine.from_unleash({"features": [feature]})


ROLLOUT_30 = {"name": "flexibleRollout", "parameters": {"rollout": "30", "groupId": "g"}}
IN_DEV = {"contextName": "environment", "operator": "IN", "values": ["dev"]}

# (id, strategies, flag fields, context, enabled, reason)
REASON_ROWS: list[
    tuple[str, list[dict[str, Any]] | None, dict[str, Any], dict[str, Any], bool, str]
] = [
    ("no strategies: on for everyone", None, {}, {}, True, "STATIC"),
    ("default strategy", [{"name": "default"}], {}, {}, True, "STATIC"),
    (
        "100% rollout",
        [{"name": "flexibleRollout", "parameters": {"rollout": "100"}}],
        {},
        {},
        True,
        "STATIC",
    ),
    ("switched off", [{"name": "default"}], {"enabled": False}, {}, False, "DISABLED"),
    (
        "constraint matched",
        [{"name": "default", "constraints": [IN_DEV]}],
        {},
        {"environment": "dev"},
        True,
        "TARGETING_MATCH",
    ),
    (
        "constraint did not match",
        [{"name": "default", "constraints": [IN_DEV]}],
        {},
        {"environment": "prod"},
        False,
        "DEFAULT",
    ),
    (
        "user list",
        [{"name": "userWithId", "parameters": {"userIds": "7"}}],
        {},
        {"userId": "7"},
        True,
        "TARGETING_MATCH",
    ),
    # mmh3("g:2") % 100 + 1 == 4 <= 30; mmh3("g:3") % 100 + 1 == 67 > 30
    ("rollout bucket in", [ROLLOUT_30], {}, {"userId": "2"}, True, "SPLIT"),
    ("rollout bucket out", [ROLLOUT_30], {}, {"userId": "3"}, False, "DEFAULT"),
]


@pytest.mark.parametrize(
    ("strategies", "fields", "context", "enabled", "reason"),
    [pytest.param(*r[1:], id=r[0]) for r in REASON_ROWS],
)
def test_resolve_gives_the_decision_and_its_reason(
    strategies: list[dict[str, Any]] | None,
    fields: dict[str, Any],
    context: dict[str, Any],
    enabled: bool,
    reason: str,
) -> None:
    engine = one_flag(strategies, **fields)
    resolution = engine.resolve("f", context)
    assert (resolution.enabled, resolution.reason, resolution.found) == (enabled, reason, True)
    assert reason in REASONS
    assert resolution.enabled is engine.is_enabled("f", context)
    assert resolution.variant == engine.get_variant("f", context)


def test_resolve_carries_the_variant_of_the_matching_strategy() -> None:
    engine = one_flag(
        [
            {
                "name": "default",
                "constraints": [IN_DEV],
                "variants": [{"name": "dev-blue", "weight": 1}],
            },
            {
                "name": "default",
                "variants": [
                    {"name": "red", "weight": 1, "payload": {"type": "json", "value": "{}"}}
                ],
            },
        ]
    )
    assert engine.resolve("f", {"environment": "dev"}).variant["name"] == "dev-blue"
    assert engine.resolve("f", {"environment": "prod"}) == Resolution(
        True,
        "STATIC",
        {
            "name": "red",
            "payload": {"type": "json", "value": "{}"},
            "enabled": True,
            "feature_enabled": True,
        },
        True,
    )


def test_unknown_flags_give_the_default_and_never_raise() -> None:
    engine = one_flag([{"name": "default"}])
    assert engine.is_enabled("missing") is False
    assert engine.is_enabled("missing", {"userId": "1"}, default=True) is True
    assert engine.get_variant("missing") == {
        "name": "disabled",
        "enabled": False,
        "feature_enabled": False,
    }
    assert engine.resolve("missing") == Resolution(
        False, "DEFAULT", engine.get_variant("missing"), False
    )


@pytest.mark.parametrize("context", [{"properties": ["a", "list"]}, {"properties": "text"}, "no"])
def test_a_context_that_breaks_evaluation_gives_the_default(context: Any) -> None:
    not_in = {"contextName": "c", "operator": "NOT_IN", "values": ["1"]}
    engine = one_flag([{"name": "default", "constraints": [not_in]}])
    assert engine.is_enabled("f", context, default=True) is True
    assert engine.is_enabled("f", context, default=False) is False
    assert engine.resolve("f", context).enabled is False


@pytest.mark.parametrize("name", [None, 3, ["not", "hashable"]])
def test_a_name_that_is_not_a_string_gives_the_default(name: Any) -> None:
    engine = one_flag([{"name": "default"}])
    assert engine.is_enabled(name, default=True) is True
    assert engine.get_variant(name)["name"] == "disabled"
    assert engine.resolve(name).found is False


def test_returned_variants_are_copies() -> None:
    engine = one_flag(
        None, variants=[{"name": "v", "weight": 1, "payload": {"type": "string", "value": "a"}}]
    )
    first = engine.get_variant("f", {"userId": "1"})
    first["payload"]["value"] = "changed"
    first["name"] = "changed"
    assert engine.get_variant("f", {"userId": "1"})["payload"] == {"type": "string", "value": "a"}


def test_date_constraints_read_time_from_the_context_or_the_injected_clock() -> None:
    after_2030 = [
        {
            "name": "default",
            "constraints": [
                {
                    "contextName": "currentTime",
                    "operator": "DATE_AFTER",
                    "value": "2030-01-01T00:00:00.000Z",
                }
            ],
        }
    ]
    doc = {"features": [{"name": "f", "enabled": True, "strategies": after_2030}]}
    no_clock = FlagEngine.from_unleash(doc)
    assert no_clock.is_enabled("f", {}) is False  # pure: no clock, no current time
    assert no_clock.is_enabled("f", {"currentTime": "2031-01-01T00:00:00Z"}) is True
    in_2031 = FlagEngine.from_unleash(doc, clock=lambda: 1924992000.0)  # 2031-01-01T00:00:00Z
    assert in_2031.is_enabled("f", {}) is True
    assert in_2031.is_enabled("f", {"currentTime": "2029-01-01T00:00:00Z"}) is False


def test_randomness_comes_from_the_injected_generator() -> None:
    doc = {
        "features": [
            {
                "name": "f",
                "enabled": True,
                "strategies": [
                    {"name": "gradualRolloutRandom", "parameters": {"percentage": "50"}}
                ],
            }
        ]
    }
    runs = [
        [FlagEngine.from_unleash(doc, rng=random.Random(7)).is_enabled("f") for _ in range(1)]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    engine = FlagEngine.from_unleash(doc, rng=random.Random(7))
    share = sum(engine.is_enabled("f") for _ in range(2000)) / 2000
    assert 0.40 < share < 0.60  # `random < 50` with random in 1..99: 49/99


def test_application_hostname_uses_the_injected_hostname() -> None:
    doc = {
        "features": [
            {
                "name": "f",
                "enabled": True,
                "strategies": [
                    {"name": "applicationHostname", "parameters": {"hostNames": "web-1, Web-2"}}
                ],
            }
        ]
    }
    assert FlagEngine.from_unleash(doc).is_enabled("f") is False
    assert FlagEngine.from_unleash(doc, hostname="web-2").is_enabled("f") is True
    assert FlagEngine.from_unleash(doc, hostname="web-3").is_enabled("f") is False


def test_rollout_shares_follow_the_percentage() -> None:
    engine = one_flag(
        [{"name": "flexibleRollout", "parameters": {"rollout": "30", "stickiness": "userId"}}]
    )
    share = sum(engine.is_enabled("f", {"userId": str(i)}) for i in range(10_000)) / 10_000
    assert 0.28 < share < 0.32


def test_apply_delta_returns_a_new_engine_and_leaves_the_old_one_alone() -> None:
    base = FlagEngine.from_unleash(
        {
            "features": [
                {
                    "name": "a",
                    "enabled": True,
                    "strategies": [{"name": "default", "segments": [1]}],
                },
                {"name": "b", "enabled": True},
            ],
            "segments": [
                {
                    "id": 1,
                    "constraints": [
                        {"contextName": "appName", "operator": "IN", "values": ["web"]}
                    ],
                }
            ],
        }
    )
    web = {"appName": "web"}
    api = {"appName": "api"}
    assert (base.is_enabled("a", web), base.is_enabled("a", api)) == (True, False)
    updated = base.apply_delta(
        {
            "events": [
                {
                    "eventId": 2,
                    "type": "segment-updated",
                    "segment": {
                        "id": 1,
                        "constraints": [
                            {"contextName": "appName", "operator": "IN", "values": ["api"]}
                        ],
                    },
                },
                {"eventId": 3, "type": "feature-removed", "featureName": "b", "project": "default"},
                {
                    "eventId": 4,
                    "type": "feature-updated",
                    "feature": {"name": "c", "enabled": True, "strategies": []},
                },
            ]
        }
    )
    assert (updated.is_enabled("a", web), updated.is_enabled("a", api)) == (False, True)
    assert sorted(updated.names()) == ["a", "c"]
    assert sorted(base.names()) == ["a", "b"]
    assert base.is_enabled("a", web) is True


def test_a_delta_that_breaks_a_flag_is_refused_in_strict_mode() -> None:
    base = one_flag([{"name": "default"}])
    bad = {
        "events": [
            {
                "type": "feature-updated",
                "feature": {
                    "name": "f",
                    "enabled": True,
                    "strategies": [{"name": "flexibleRollout", "parameters": {"rollout": "101"}}],
                },
            }
        ]
    }
    with pytest.raises(
        Exception, match=r'strategies\[0\]\.parameters\.rollout: expected 0\.\.100, got "101"'
    ):
        base.apply_delta(bad)
    assert base.is_enabled("f") is True
    assert base.apply_delta(bad, strict=False).is_enabled("f") is False


def test_hydration_event_replaces_everything() -> None:
    base = one_flag([{"name": "default"}])
    hydrated = base.apply_delta(
        {
            "events": [
                {"type": "hydration", "features": [{"name": "g", "enabled": True}], "segments": []}
            ]
        }
    )
    assert hydrated.names() == ["g"]


def test_flag_engine_is_re_exported_from_nonstop_flags() -> None:
    assert ReExported is FlagEngine
