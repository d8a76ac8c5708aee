"""FlagStore: CRUD, revisions, import validation (a table of bad documents and the exact
messages), tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flags.conftest import FakeErrors, ServiceThread
from nonstop.errors import StateError, UsageError
from nonstop.flags.engine import FlagDocumentError
from nonstop.flags.service import set_percent
from nonstop.flags.store import FlagStore, new_feature


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlagStore]:
    flag_store = FlagStore(tmp_path / "state.db")
    yield flag_store
    flag_store.close()


def flag(name: str = "checkout", **changes: Any) -> dict[str, Any]:
    feature = new_feature(name, 50, "default", "")
    feature.update(changes)
    return feature


def constrained(operator: str, **constraint: Any) -> dict[str, Any]:
    strategy = {
        "name": "default",
        "parameters": {},
        "constraints": [{"contextName": "userId", "operator": operator, **constraint}],
    }
    return flag(strategies=[strategy])


def test_create_get_update_delete_and_revisions(store: FlagStore) -> None:
    assert (store.revision, store.features()) == (0, [])
    assert store.put(flag("a"), create=True) == 1
    assert store.put(flag("b"), create=True) == 2
    assert [f["name"] for f in store.features()] == ["a", "b"]
    changed = store.update("a", lambda f: f.__setitem__("enabled", False))
    assert changed["enabled"] is False
    assert store.get("a")["enabled"] is False
    assert store.revision == 3
    assert store.delete("a") == 4
    assert [f["name"] for f in store.features()] == ["b"]
    assert store.document() == {"version": 1, "features": [flag("b")]}


def test_state_survives_reopening(tmp_path: Path) -> None:
    first = FlagStore(tmp_path / "state.db")
    first.put(flag("a"), create=True)
    first.close()
    again = FlagStore(tmp_path / "state.db")
    try:
        assert (again.revision, [f["name"] for f in again.features()]) == (1, ["a"])
    finally:
        again.close()


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (lambda s: s.put(flag("a"), create=True), StateError, 'flag "a" already exists'),
        (lambda s: s.put(flag("zz")), UsageError, 'no flag "zz"'),
        (lambda s: s.get("zz"), UsageError, 'no flag "zz"'),
        (lambda s: s.delete("zz"), UsageError, 'no flag "zz"'),
        (
            lambda s: s.update("a", lambda f: set_percent(f, 150)),
            FlagDocumentError,
            'features[0] "a": strategies[0].parameters.rollout: expected 0..100, got "150"',
        ),
    ],
)
def test_bad_edits_change_nothing(
    store: FlagStore, action: Any, error: type[Exception], message: str
) -> None:
    store.put(flag("a"), create=True)
    before = (store.revision, store.document())
    with pytest.raises(error) as caught:
        action(store)
    assert message in str(caught.value)
    assert (store.revision, store.document()) == before


BAD_DOCUMENTS = [
    ({}, "features: expected a list, got null"),
    ({"features": "all"}, 'features: expected a list, got "all"'),
    ({"features": [1]}, "features[0]: expected an object, got 1"),
    (
        {"features": [{"enabled": True, "strategies": []}]},
        "features[0].name: expected a string, got null",
    ),
    (
        {"features": [flag(enabled="yes")]},
        'features[0] "checkout": enabled: expected true or false, got "yes"',
    ),
    (
        {
            "features": [
                flag(strategies=[{"name": "flexibleRollout", "parameters": {"rollout": "150"}}])
            ]
        },
        'features[0] "checkout": strategies[0].parameters.rollout: expected 0..100, got "150"',
    ),
    (
        {"features": [constrained("LIKE", values=["a"])]},
        'features[0] "checkout": strategies[0].constraints[0].operator: unknown operator "LIKE"',
    ),
    (
        {"features": [constrained("REGEX", value="a(")]},
        'features[0] "checkout": strategies[0].constraints[0].value: invalid regular '
        'expression "a(": unclosed group at offset 1',
    ),
    (
        {"features": [constrained("NUM_GT", value="abc")]},
        'features[0] "checkout": strategies[0].constraints[0].value: expected a number, got "abc"',
    ),
    (
        {"features": [flag(), flag()]},
        'features[1] "checkout": duplicate feature name',
    ),
    (
        {"features": [flag(strategies=[{"name": "default", "segments": [9]}])]},
        'features[0] "checkout": strategies[0].segments: unknown segment 9',
    ),
    # the names `create` refuses, import refuses too
    ({"features": [flag("../../etc/passwd")]}, "features[0].name: expected letters, digits"),
    ({"features": [flag("a" * 10_000)]}, "features[0].name: expected letters, digits"),
    ({"features": [flag("v9\n")]}, 'got "v9\\n"'),
    ({"features": [flag("")]}, "features[0].name: expected letters, digits"),
    ({"features": [flag(".hidden")]}, "features[0].name: expected letters, digits"),
]


@pytest.mark.parametrize(("document", "message"), BAD_DOCUMENTS)
def test_bad_import_names_flag_and_field_and_keeps_the_good_state(
    store: FlagStore, document: dict[str, Any], message: str
) -> None:
    store.replace_document({"version": 1, "features": [flag("good")]})
    before = (store.revision, store.document())
    with pytest.raises(FlagDocumentError) as caught:
        store.replace_document(document)
    assert message in str(caught.value)
    assert str(caught.value).startswith("flag document has 1 problem:")
    assert (store.revision, store.document()) == before


def test_import_replaces_flags_and_keeps_segments(store: FlagStore) -> None:
    store.put(flag("old"), create=True)
    segment = {
        "id": 1,
        "constraints": [{"contextName": "plan", "operator": "IN", "values": ["pro"]}],
    }
    doc = {
        "version": 1,
        "features": [flag("x", strategies=[{"name": "default", "segments": [1]}]), flag("y")],
        "segments": [segment],
    }
    assert store.replace_document(doc) == 2
    assert store.document() == doc


def test_tokens_are_hashed_and_checked(store: FlagStore) -> None:
    token = store.create_token("web")
    other = store.create_token("worker")
    assert token != other
    assert token.startswith("nonstop:")
    assert store.check_token(token)
    assert store.check_token(other)
    assert not store.check_token(token + "x")
    assert not store.check_token("")
    assert [t.name for t in store.tokens()] == ["web", "worker"]
    assert token not in store.token_hashes()


def test_events_usage_and_clients(store: FlagStore) -> None:
    store.add_event("a", "created")
    store.add_event("a", "disabled", "warning")
    store.add_event("b", "created")
    assert [(e["level"], e["message"]) for e in store.events("a")] == [
        ("info", "created"),
        ("warning", "disabled"),
    ]
    store.add_usage({"a": (1, 2)})
    store.add_usage({"a": (3, 0), "b": (0, 1)})
    usage = store.usage()
    assert (usage["a"]["yes"], usage["a"]["no"], usage["b"]["no"]) == (4, 2, 1)
    store.register_client("shop", "web-1", "sdk:1")
    store.register_client("shop", "web-1", "sdk:2")
    assert [(c["instance_id"], c["sdk_version"]) for c in store.clients()] == [("web-1", "sdk:2")]


@pytest.mark.parametrize(
    ("strategies", "message"),
    [
        ([], "has 0 flexibleRollout strategies"),
        (
            [{"name": "flexibleRollout", "parameters": {}}] * 2,
            "has 2 flexibleRollout strategies",
        ),
    ],
)
def test_set_percent_needs_one_flexible_rollout(
    strategies: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        set_percent(flag(strategies=strategies), 10)


def test_set_percent_sets_the_rollout() -> None:
    feature = flag()
    set_percent(feature, 7)
    assert feature["strategies"][0]["parameters"]["rollout"] == "7"


def test_import_through_the_api_refuses_a_non_object(tmp_path: Path) -> None:
    """The agent route checks the body's shape before the store sees it."""
    server = ServiceThread(tmp_path, None, FakeErrors()).start()
    try:
        with pytest.raises(UsageError, match='import: expected a JSON object with "features"'):
            server.call("PUT", "/v1/flags-document", {"document": [1, 2]})
        with pytest.raises(UsageError, match="features: expected a list, got null"):
            server.call("PUT", "/v1/flags-document", {"document": {}})
        assert server.call("GET", "/v1/flags-document") == {"version": 1, "features": []}
    finally:
        server.stop()
