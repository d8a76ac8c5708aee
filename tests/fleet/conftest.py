"""Fixtures of the fleet tests: real test hosts (tests/fleet/netns.py)."""

from __future__ import annotations

import contextlib
import gc
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.netns import TestFleet, fleet_of

MakeFleet = Callable[[int], TestFleet]


@pytest.fixture(autouse=True)
def collect_forwarded_sockets() -> Iterator[None]:
    """After each fleet test (its event loop closed), collect what asyncssh's local forwarder
    leaves unclosed: an accepted connection on the forwarded agent socket whose SSH channel was
    cut. Collected here, its ResourceWarning stays with the test that caused it instead of
    surfacing, as an unraisable exception, in whichever test the collector next runs in."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[MakeFleet]:
    """``make_fleet(n)``: n test hosts with sshd, torn down when the test ends (even failing)."""
    with contextlib.ExitStack() as stack:
        made: list[TestFleet] = []

        def make(count: int) -> TestFleet:
            fleet = stack.enter_context(fleet_of(count, tmp_path / f"fleet{len(made)}"))
            made.append(fleet)
            return fleet

        yield make


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of this nonstop and its dependencies, built once per test session."""
    from nonstop.fleet.bootstrap import build_wheelhouse

    folder = tmp_path_factory.mktemp("wheels")
    build_wheelhouse(folder)
    return folder


def fleet_toml(fleet: TestFleet, *, extra: str = "") -> str:
    """A nonstop.toml whose [fleet] is the test hosts (the sample app, HAProxy per host)."""
    hosts = "".join(
        f'[[fleet.hosts]]\nname = "{h.name}"\naddress = "{h.address}"\n'
        f'key = "{fleet.client_key}"\npath = "{h.root}/nonstop"\n'
        f'python = "{sys._base_executable}"\n'
        for h in fleet.hosts
    )
    return (
        '[app]\nname = "shop"\ncommand = "python3 -m nonstop.demo.sampleapp --port {port}"\n'
        '[router]\nkind = "haproxy"\n'
        f"{extra}{hosts}"
    )
