"""Fixtures of the fleet tests: real test hosts (tests/fleet/netns.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.netns import TestFleet, fleet_of

MakeFleet = Callable[[int], TestFleet]


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
