"""The edge's pin on a real HAProxy (decision 0581), and the checks made before it changes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from e2e.harness import free_port
from nonstop.config.fleet import FleetConfig, FrontConfig, HostConfig
from nonstop.errors import UsageError
from nonstop.fleet.controller import host_view
from nonstop.fleet.edge import Edge
from nonstop.fleet.plan import FleetSpec, HostView
from nonstop.fleet.run import check_pins
from nonstop_testing import require_binary

HEADER = "X-Nonstop-Release"


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nse-", dir="/tmp"))  # short: a unix socket lives here
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def host() -> AsyncIterator[tuple[int, list[str | None]]]:
    """A stand-in for a host's router: answers every path, and notes the stamp it was sent."""
    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/":
            seen.append(request.headers.get(HEADER))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, seen
    await runner.cleanup()


def fleet_on(port: int) -> FleetConfig:
    front = FrontConfig(listen=f"127.0.0.1:{free_port()}")
    return FleetConfig(
        hosts=[HostConfig(name="web1", address="127.0.0.1")], front=front, router_port=port
    )


async def through(edge: Edge, forged: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        url = f"http://{edge.router.listen}/"
        async with session.get(url, headers={HEADER: forged}) as response:
            assert response.status == 200


async def test_the_edge_replaces_a_clients_stamp_and_an_edge_that_stops_pinning_drops_its_pin(
    state_dir: Path, host: tuple[int, list[str | None]]
) -> None:
    """A client never chooses a release: its header is replaced by the pin, or dropped when
    nothing is pinned. An edge started without the edge switch clears the pin it had, so
    turning the switch on again later starts from no stamp, not from a stale release."""
    require_binary("haproxy", "/usr/sbin/haproxy")
    port, seen = host
    fleet = fleet_on(port)
    views = {"web1": HostView("web1", active="v1")}
    pinning = Edge(state_dir, fleet, 2.0, pins=True)
    plain = Edge(state_dir, fleet, 2.0, pins=False)
    try:
        await pinning.start()
        await pinning.apply(("web1",), views)
        await pinning.pin("v2")
        assert pinning.pinned() == "v2"
        await through(pinning, "v9")
        await pinning.close()
        await plain.start()  # the switch turned off: a new HAProxy (HTTP checks no more)
        await plain.apply(("web1",), views)
        await through(plain, "v9")
        assert plain.pinned() is None
        assert Edge(state_dir, fleet, 2.0, pins=True).pinned() is None  # not v2 again
        with pytest.raises(UsageError, match=r'fleet\.front\.switch is not "edge"'):
            await plain.pin("v2")
    finally:
        await plain.close()
        await plain.router.stop()
    assert seen == ["v2", None]


def test_an_edge_switch_is_refused_before_anything_changes_while_a_host_cannot_follow() -> None:
    spec = FleetSpec("bluegreen", "v2", "v1", ("web1", "web2"), edge_switch=True)
    old = host_view("web1", {"active_release": "v1", "router": {"kind": "haproxy"}}, [], "v2", 0)
    new = host_view(
        "web2", {"active_release": "v1", "router": {"release_slots": True}}, [], "v2", 0
    )
    assert (old.slots, new.slots) == (False, True)
    with pytest.raises(UsageError) as info:
        check_pins(spec, [old, new])
    assert str(info.value) == (
        "fleet.front.switch: web1 cannot follow the edge's pin (its router runs without "
        "router.release_slots, started by an older nonstop or another config): run "
        '`nonstop fleet bootstrap` for it again, or set switch = "hosts" (docs/fleet.md)'
    )
    check_pins(spec, [new])
    check_pins(FleetSpec("bluegreen", "v2", "v1", ("web1",)), [old])  # hosts switch: fine
