"""The Unleash client specification, every file in its index, every test and variant test
as its own pytest case (ids: file stem, index, description)."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from nonstop.flags.engine import FlagDocumentError, FlagEngine

from .helpers import load_spec, require_spec, spec_files


def _cases(kind: str) -> list[Any]:
    cases = []
    for name in spec_files():
        for i, case in enumerate(load_spec(name).get(kind, [])):
            case_id = f"{name.removesuffix('.json')}:{i}:{case['description']}"
            cases.append(pytest.param(name, case, id=case_id))
    if not cases:
        cases.append(pytest.param(None, None, id="suite-absent"))
    return cases


@cache
def _engine(name: str) -> FlagEngine:
    # The suite deliberately contains flags the SDK must tolerate (an unknown operator, an
    # invalid regex...): evaluate leniently, like the SDK; strict mode is tested below.
    return FlagEngine.from_unleash(load_spec(name)["state"], strict=False)


@pytest.mark.parametrize(("name", "case"), _cases("tests"))
def test_is_enabled(name: str | None, case: dict[str, Any] | None) -> None:
    require_spec()
    assert name is not None
    assert case is not None
    engine = _engine(name)
    assert engine.is_enabled(case["toggleName"], case["context"]) is case["expectedResult"]


@pytest.mark.parametrize(("name", "case"), _cases("variantTests"))
def test_get_variant(name: str | None, case: dict[str, Any] | None) -> None:
    require_spec()
    assert name is not None
    assert case is not None
    engine = _engine(name)
    assert engine.get_variant(case["toggleName"], case["context"]) == case["expectedResult"]


def _state_cases() -> list[Any]:
    names = spec_files() or [None]
    return [pytest.param(n, id=(n or "suite-absent").removesuffix(".json")) for n in names]


# Which spec documents a strict import refuses, and for which flags. Everything else in the
# suite is a clean document that strict mode accepts as is.
REFUSED = {
    "06-remote-address-strategy.json": {"Feature.remoteAddress.C"},
    "13-constraint-operators.json": {"F7.invalid-operator"},
    "14-constraint-semver-operators.json": {"F8.invalidSemverWithLeadingV"},
    "15-global-constraints.json": {"F9.withMissingSegment"},
    "17-dependent-features.json": {
        "parent.with.cycle",
        "child.with.cycle",
        "child.with.transitive.dependency",
        "parents.not.exist.child.enabled",
    },
    "21-regex-constraint-operators.json": {
        "invalid-regex-defaults-to-false",
        "R90.reject_lookahead",
        "R91.reject_backreference",
    },
    "22-cidr-constraint-operators.json": {
        "CIDR.mixed.values",
        "CIDR.invalid.only",
        "CIDR.ipv6.mixed.values",
    },
}


@pytest.mark.parametrize("name", _state_cases())
def test_strict_import_names_the_flags_the_sdk_only_tolerates(name: str | None) -> None:
    require_spec()
    assert name is not None
    state = load_spec(name)["state"]
    expected = REFUSED.get(name, set())
    if not expected:
        assert len(FlagEngine.from_unleash(state)) > 0
        return
    with pytest.raises(FlagDocumentError) as caught:
        FlagEngine.from_unleash(state)
    named = {p.path.split('"')[1] for p in caught.value.problems}
    assert named == expected
