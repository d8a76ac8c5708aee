"""The nonstop.toml a host's agent runs with: the controller's, minus ``[fleet]``, with the
host's router listening on the host's own address at ``fleet.router_port`` (where the edge
router, or the external load balancer, sends traffic).

Written as TOML by :func:`to_toml`, a small writer for what nonstop.toml holds (tables, arrays,
strings, numbers, booleans); the result is validated by the same loader before it is sent, so
a host never receives a file its agent would refuse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from nonstop.config.fleet import FleetConfig, HostConfig, switches_at_edge
from nonstop.config.load import parse_config, to_wire
from nonstop.config.schema import NonstopConfig

BARE_KEY = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def host_settings(config: NonstopConfig, host: HostConfig, fleet: FleetConfig) -> dict[str, Any]:
    data = to_wire(config)
    data.pop("fleet", None)
    router = dict(data.get("router", {}))
    router["listen"] = f"{host.address}:{fleet.router_port}"
    if fleet.front.kind == "external":  # the load balancer checks it (fleet/external.py)
        router["front_health"] = fleet.front.health_path
    if switches_at_edge(fleet, config.router.kind):
        # The edge pins a release (decision 0581): the host's router sends a stamped request
        # to that release's ready instances, and answers the edge's check of it on this path.
        router["release_slots"] = True
        router["front_health"] = fleet.front.health_path
    data["router"] = router
    if not fleet.runs_workers(host):  # workers run on the hosts with the "worker" role
        processes = data.get("processes", {})
        data["processes"] = {name: {**role, "replicas": 0} for name, role in processes.items()}
    return data


def host_toml(config: NonstopConfig, host: HostConfig, fleet: FleetConfig) -> str:
    text = to_toml(host_settings(config, host, fleet))
    parse_config(text, source=f"nonstop.toml for {host.name}")
    return text


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` as a TOML document: plain values first, then one ``[table]`` per mapping."""
    return "".join(_table(data, ())).lstrip("\n")


def _table(data: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    lines = [f"\n[{'.'.join(_key(part) for part in path)}]\n"] if path else []
    tables = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}\n")
    for key, value in tables:
        lines.extend(_table(value, (*path, key)))
    return lines


def _key(key: str) -> str:
    return key if key and set(key) <= BARE_KEY else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are a subset of TOML basic strings'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML form for {type(value).__name__}")
