"""The route table a router last applied, saved as JSON (``route-table.json`` in its state
directory) before every load, so a restarted router (or agent) routes it again; and the checks
every router kind makes on a table before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nonstop.drivers.router.base import RouteTable, Upstream
from nonstop.drivers.router.process import write_atomic
from nonstop.errors import RouterError, explain

NO_UPSTREAM_BODY = (  # what every router answers while no upstream is in rotation
    "503 no upstream: nonstop is not routing any instance of this service right now\n"
)


def save_table(path: Path, table: RouteTable) -> None:
    """Durably (atomic write, fsync): a router restarted after this routes ``table``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(table_to_dict(table), indent=2))
    except OSError as exc:
        raise RouterError(f"could not save the route table to {path}: {exc}") from exc


def validate_table(table: RouteTable) -> None:
    """Raise RouterError naming the first bad upstream (``upstreams[2] (web-3): ...``)."""
    seen: dict[str, int] = {}
    for index, upstream in enumerate(table.upstreams):
        where = f"route table upstreams[{index}] ({upstream.instance_id})"
        problem = _upstream_problem(upstream)
        if problem:
            raise RouterError(f"{where}: {problem}")
        if upstream.address in seen:
            first = seen[upstream.address]
            raise RouterError(f"{where}: address {upstream.address} is already upstreams[{first}]")
        seen[upstream.address] = index


def _upstream_problem(upstream: Upstream) -> str | None:
    if isinstance(upstream.weight, bool) or not isinstance(upstream.weight, int):
        return f"weight must be an integer, got {upstream.weight!r}"
    if upstream.weight < 0:
        return f"weight must be >= 0, got {upstream.weight}"
    host, sep, port = upstream.address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f'address must be "host:port", got {upstream.address!r}'
    return None


def table_to_dict(table: RouteTable) -> dict[str, Any]:
    return {
        "upstreams": [
            {
                "instance_id": u.instance_id,
                "release": u.release,
                "address": u.address,
                "weight": u.weight,
            }
            for u in table.upstreams
        ]
    }


def load_table(path: Path) -> RouteTable:
    """A route table saved with :func:`table_to_dict` (empty when there is none yet)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return RouteTable(upstreams=())
    except (OSError, ValueError) as exc:
        raise RouterError(f"{path} is unreadable: {exc}") from exc
    return table_from_dict(data, source=str(path))


def table_from_dict(data: object, *, source: str = "route table") -> RouteTable:
    rows = data.get("upstreams") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise RouterError(f"{source}: not a route table (no upstreams list)")
    try:
        return RouteTable(
            upstreams=tuple(
                Upstream(
                    instance_id=str(row["instance_id"]),
                    release=str(row["release"]),
                    address=str(row["address"]),
                    weight=int(row["weight"]),
                )
                for row in rows
            )
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RouterError(f"{source}: not a route table ({explain(exc)})") from exc
