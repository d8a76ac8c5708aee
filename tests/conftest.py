"""Shared fixtures. Feature-specific fixtures live in each tests/<area>/conftest.py; helpers
that tests import live in tests/nonstop_testing.py.

Also the order tests run in. ``make test`` runs ``pytest -n 2 --dist worksteal``: each worker
starts on one half of this order and an idle worker takes the back half of the other's queue
(docs/decisions/0550-test-suite-order-and-worksteal.md). So the long tests go first (the run
ends on sub-second tests that even out the two workers, not on one worker alone with a 30 s
test), and tests sharing a costly set-up stay together on one worker."""

from __future__ import annotations

import pytest

from nonstop_testing import REPO_ROOT, conformance_dir, require_binary

__all__ = ["REPO_ROOT", "conformance_dir", "require_binary"]

SHARED_SESSION_FIXTURES = frozenset({"wheelhouse"})
"""Session fixtures too costly to build on two workers: the fleet wheelhouse (pip builds
nonstop and its dependencies' wheels: 96 s on a loaded 2-core machine, and the fleet site
built from it as long again). Their modules run first, so they stay on one worker."""


def _rank(item: pytest.Item, slow_modules: set[str]) -> int:
    """0: a module that uses a costly shared session fixture (it runs first, on the worker that
    holds the head of the order, so no other worker needs that fixture); 1: modules with
    end-to-end tests (marked slow: 5-60 s each); 2: the rest (mostly well under 1 s each)."""
    if SHARED_SESSION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return 0
    return 1 if _module(item) in slow_modules else 2


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest work first. Every worker must collect the same order (xdist checks it): a stable
    sort on what each module declares, which also keeps a module's tests together (its
    module-scoped fixtures are built once)."""
    slow_modules = {_module(i) for i in items if i.get_closest_marker("slow")}
    module_rank: dict[str, int] = {}
    for item in items:
        rank = _rank(item, slow_modules)
        module_rank[_module(item)] = min(rank, module_rank.get(_module(item), rank))
    items.sort(key=lambda i: module_rank[_module(i)])
