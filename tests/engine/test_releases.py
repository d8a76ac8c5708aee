"""A kept release deploys again under the same name when it describes the same thing."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.config.load import to_wire, validate_config
from nonstop.engine.releases import existing_release, merged_env
from nonstop.errors import UsageError
from nonstop.store import open_store

APP = {"name": "shop", "command": "app --port {port}", "env": {"GREETING": "hello"}}


def test_the_same_release_again_under_app_env_is_the_kept_one(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    config = validate_config({"app": APP})
    request_env = {"VERSION": "v1"}
    env = merged_env(config, request_env)
    assert env == {"GREETING": "hello", "VERSION": "v1"}
    store.add_release("v1", str(tmp_path), config.app.command, env, {"app": APP})
    row = existing_release(store, "v1", config, request_env)
    assert row is not None
    assert row.name == "v1"
    store.close()


@pytest.mark.parametrize(
    ("app", "request_env"),
    [
        ({**APP, "env": {"GREETING": "bye"}}, {"VERSION": "v1"}),  # [app] env changed
        (APP, {"VERSION": "v1", "DEBUG": "1"}),  # the request's own env changed
        ({**APP, "command": "other --port {port}"}, {"VERSION": "v1"}),
    ],
)
def test_another_command_or_environment_under_a_kept_name_is_refused(
    tmp_path: Path, app: dict[str, object], request_env: dict[str, str]
) -> None:
    store = open_store(tmp_path)
    kept = validate_config({"app": APP})
    store.add_release(
        "v1", str(tmp_path), kept.app.command, merged_env(kept, {"VERSION": "v1"}), {"app": APP}
    )
    with pytest.raises(UsageError, match="release v1 already exists with a different command"):
        existing_release(store, "v1", validate_config({"app": app}), request_env)
    store.close()


def test_another_processes_table_under_a_kept_name_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    worker = {"worker": {"command": "rq worker", "replicas": 2}}
    kept = validate_config({"app": APP, "processes": worker})
    env = merged_env(kept, {"VERSION": "v1"})
    store.add_release("v1", str(tmp_path), kept.app.command, env, to_wire(kept))
    assert existing_release(store, "v1", kept, {"VERSION": "v1"}) is not None
    changed = validate_config({"app": APP, "processes": {"worker": {"command": "rq worker"}}})
    with pytest.raises(UsageError, match=r"environment or \[processes\]; releases are immutable"):
        existing_release(store, "v1", changed, {"VERSION": "v1"})
    store.close()
