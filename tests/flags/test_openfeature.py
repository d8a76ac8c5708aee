"""The OpenFeature provider through OpenFeature's own client API: values, variants, reasons
and error codes, from a table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode

from e2e.harness import free_port
from flags.conftest import ServiceThread
from flags.test_client_api import wait_for
from nonstop.flags import Client, FlagEngine
from nonstop.flags.openfeature import NonstopProvider, OutcomeHook, unleash_context


def variant(name: str, payload_type: str | None = None, value: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "weight": 1000, "stickiness": "default"}
    if payload_type is not None:
        entry["payload"] = {"type": payload_type, "value": value}
    return entry


def on(name: str, *variants: dict[str, Any], strategies: Any = ()) -> dict[str, Any]:
    return {
        "name": name,
        "enabled": True,
        "strategies": list(strategies),
        "variants": list(variants),
    }


TARGETED = {
    "name": "default",
    "parameters": {},
    "constraints": [{"contextName": "userId", "operator": "IN", "values": ["42"]}],
}
HALF = {
    "name": "flexibleRollout",
    "parameters": {"rollout": "50", "stickiness": "userId", "groupId": "half"},
}
DOC = {
    "version": 1,
    "features": [
        on("static"),
        {
            "name": "off",
            "enabled": False,
            "strategies": [],
            "variants": [variant("x", "string", "v")],
        },
        on("targeted", variant("blue", "string", "#00f"), strategies=[TARGETED]),
        on("half", strategies=[HALF]),
        on("text", variant("blue", "string", "#00f")),
        on("csv", variant("list", "csv", "a,b")),
        on("int", variant("n", "number", "42")),
        on("float", variant("f", "number", "2.5")),
        on("badnum", variant("n", "number", "lots")),
        on("obj", variant("o", "json", '{"limit": 3, "tags": ["a"]}')),
        on("badjson", variant("o", "json", "{")),
        on("scalarjson", variant("o", "json", "3")),
        on("nopayload", variant("plain")),
    ],
}
# Unleash buckets: murmur3("half:1") % 100 + 1 = 17 <= 50 (in), murmur3("half:2") -> 66 (out)
IN_HALF, OUT_OF_HALF = "1", "2"

CASES = [
    # kind, flag, default, targeting key, value, variant, reason, error code
    ("boolean", "static", False, None, True, "on", "STATIC", None),
    ("boolean", "off", True, None, False, "off", "DISABLED", None),
    ("boolean", "targeted", False, "42", True, "blue", "TARGETING_MATCH", None),
    ("boolean", "targeted", True, "43", False, "off", "DEFAULT", None),
    ("boolean", "half", False, IN_HALF, True, "on", "SPLIT", None),
    ("boolean", "half", True, OUT_OF_HALF, False, "off", "DEFAULT", None),
    ("boolean", "missing", True, None, True, None, "ERROR", ErrorCode.FLAG_NOT_FOUND),
    ("string", "text", "x", None, "#00f", "blue", "STATIC", None),
    ("string", "csv", "x", None, "a,b", "list", "STATIC", None),
    ("string", "targeted", "x", "42", "#00f", "blue", "TARGETING_MATCH", None),
    ("string", "targeted", "x", "43", "x", None, "DEFAULT", None),
    ("string", "off", "x", None, "x", None, "DISABLED", None),
    ("string", "int", "x", None, "x", "n", "ERROR", ErrorCode.TYPE_MISMATCH),
    ("string", "nopayload", "x", None, "x", "plain", "DEFAULT", None),
    ("string", "static", "x", None, "x", None, "DEFAULT", None),
    ("string", "missing", "x", None, "x", None, "ERROR", ErrorCode.FLAG_NOT_FOUND),
    ("integer", "int", 0, None, 42, "n", "STATIC", None),
    ("integer", "float", 0, None, 0, "f", "ERROR", ErrorCode.PARSE_ERROR),
    ("integer", "badnum", 0, None, 0, "n", "ERROR", ErrorCode.PARSE_ERROR),
    ("integer", "text", 0, None, 0, "blue", "ERROR", ErrorCode.TYPE_MISMATCH),
    ("float", "float", 0.0, None, 2.5, "f", "STATIC", None),
    ("float", "int", 0.0, None, 42.0, "n", "STATIC", None),
    ("float", "badnum", 1.5, None, 1.5, "n", "ERROR", ErrorCode.PARSE_ERROR),
    ("object", "obj", {}, None, {"limit": 3, "tags": ["a"]}, "o", "STATIC", None),
    ("object", "badjson", {}, None, {}, "o", "ERROR", ErrorCode.PARSE_ERROR),
    ("object", "scalarjson", {}, None, {}, "o", "ERROR", ErrorCode.TYPE_MISMATCH),
    ("object", "text", {}, None, {}, "blue", "ERROR", ErrorCode.TYPE_MISMATCH),
    ("object", "missing", {"d": 1}, None, {"d": 1}, None, "ERROR", ErrorCode.FLAG_NOT_FOUND),
]


@pytest.fixture
def of_client() -> Iterator[Any]:
    api.set_provider(NonstopProvider(FlagEngine.from_unleash(DOC)))
    yield api.get_client()
    api.clear_providers()


@pytest.mark.parametrize(
    ("kind", "flag", "default", "key", "value", "variant_name", "reason", "error"), CASES
)
def test_resolution_details(
    of_client: Any,
    kind: str,
    flag: str,
    default: Any,
    key: str | None,
    value: Any,
    variant_name: str | None,
    reason: str,
    error: ErrorCode | None,
) -> None:
    details = getattr(of_client, f"get_{kind}_details")(flag, default, EvaluationContext(key))
    assert (details.value, details.variant, details.reason, details.error_code) == (
        value,
        variant_name,
        reason,
        error,
    )
    if error is not None:
        assert flag in (details.error_message or "")


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (None, {}),
        (EvaluationContext("u1"), {"userId": "u1"}),
        (
            EvaluationContext("u1", {"environment": "prod", "plan": "pro", "beta": True, "n": 3}),
            {
                "userId": "u1",
                "environment": "prod",
                "properties": {"plan": "pro", "beta": "true", "n": "3"},
            },
        ),
        (EvaluationContext(None, {"sessionId": "s", "gone": None}), {"sessionId": "s"}),
    ],
)
def test_unleash_context(context: EvaluationContext | None, expected: dict[str, Any]) -> None:
    assert unleash_context(context) == expected


def test_provider_on_the_sdk_follows_a_kill_switch(server: ServiceThread, token: str) -> None:
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 100})
    sdk = Client(server.url, token, refresh_interval=3600, metrics_interval=3600)
    api.set_provider(NonstopProvider(sdk))
    try:
        flags = api.get_client()
        assert sdk.streaming.wait(10)
        assert wait_for(lambda: flags.get_boolean_value("checkout", False))
        server.call("POST", "/v1/flags/checkout/disable")
        assert wait_for(lambda: flags.get_boolean_details("checkout", True).reason == "DISABLED")
        bucket, _ = sdk._pending()
        assert bucket is not None
        assert bucket["toggles"]["checkout"]["yes"] >= 1
    finally:
        api.clear_providers()  # shuts the provider down, which closes the client


def test_provider_with_an_unreachable_server_gives_defaults() -> None:
    sdk = Client(f"http://127.0.0.1:{free_port()}", "t", refresh_interval=0.1)
    api.set_provider(NonstopProvider(sdk))
    try:
        details = api.get_client().get_string_details("anything", "fallback")
        assert (details.value, details.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)
    finally:
        api.clear_providers()


def test_outcome_hook_records_each_evaluated_flag(server: ServiceThread, token: str) -> None:
    """OpenFeature's hooks on the real SDK and the real service: each flag evaluated inside
    `track()` gets one outcome (error when the block raises or calls fail()); evaluations
    outside it, and evaluations that failed, are not outcomes."""
    server.call("POST", "/v1/flags", {"name": "checkout", "percent": 100})
    server.call("POST", "/v1/flags", {"name": "legacy", "percent": 100})
    server.call("POST", "/v1/flags/legacy/disable")
    sdk = Client(server.url, token, refresh_interval=3600, metrics_interval=3600)
    provider = NonstopProvider(sdk)
    hook = OutcomeHook(provider)
    api.set_provider(provider)
    api.add_hooks([hook])
    try:
        flags = api.get_client()
        assert wait_for(lambda: flags.get_boolean_value("checkout", False))  # outside: nothing
        with hook.track():
            assert flags.get_boolean_value("checkout", False)
            assert flags.get_boolean_value("checkout", False)  # the same work: one outcome

        def checkout() -> None:
            with hook.track():
                assert flags.get_boolean_value("checkout", False)
                assert not flags.get_boolean_value("legacy", True)
                raise ValueError("payment declined")

        with pytest.raises(ValueError, match="payment declined"):
            checkout()
        with hook.track() as scope:
            assert not flags.get_boolean_value("legacy", True)
            assert flags.get_boolean_value("missing", True)  # failed: the default, no outcome
            scope.fail()
        assert hook.evaluation_errors["missing"] == 1  # (and any made before the first fetch)
        bucket, _ = sdk._pending()
        assert bucket is not None
        assert bucket["toggles"]["checkout"]["outcomes"] == {"yes": {"ok": 1, "error": 1}}
        assert bucket["toggles"]["legacy"]["outcomes"] == {"no": {"error": 2}}
        assert "missing" not in bucket["toggles"]
    finally:
        api.clear_hooks()
        api.clear_providers()  # closes the client, which sends the last bucket
    assert server.service is not None
    store = server.service.store
    assert (store.outcomes("checkout"), store.outcomes("legacy")) == ((1, 1, 0, 0), (0, 0, 0, 2))


def test_outcome_hook_needs_the_sdk_client() -> None:
    with pytest.raises(TypeError, match="OutcomeHook needs the SDK Client"):
        OutcomeHook(NonstopProvider(FlagEngine.from_unleash(DOC)))
