"""Small helpers that read names and types out of pglast's JSON tree and write SQL back.

The tree is libpg_query's JSON form (``parse_sql_json``): each node is ``{"NodeType": {fields}}``
and fields equal to their zero value are left out, so every read has a default.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pglast.keywords import (
    COL_NAME_KEYWORDS,
    RESERVED_KEYWORDS,
    TYPE_FUNC_NAME_KEYWORDS,
)

Node = dict[str, Any]

_QUOTE_WORDS = RESERVED_KEYWORDS | COL_NAME_KEYWORDS | TYPE_FUNC_NAME_KEYWORDS
_PLAIN_FIRST = set("abcdefghijklmnopqrstuvwxyz_")
_PLAIN_REST = _PLAIN_FIRST | set("0123456789$")


@lru_cache(maxsize=4096)
def quote_ident(name: str) -> str:
    """``orders`` -> ``orders``; ``Order Items`` -> ``"Order Items"``; ``user`` -> ``"user"``."""
    plain = (
        bool(name)
        and name[0] in _PLAIN_FIRST
        and all(ch in _PLAIN_REST for ch in name)
        and name not in _QUOTE_WORDS
    )
    return name if plain else '"' + name.replace('"', '""') + '"'


def rel_key(rangevar: Node) -> str:
    """A table's identity for tracking: ``t`` and ``public.t`` are the same table."""
    return f"{rangevar.get('schemaname', 'public')}.{rangevar.get('relname', '')}"


def rel_sql(rangevar: Node) -> str:
    """The table as written, quoted when needed: ``app.orders``."""
    name = quote_ident(rangevar.get("relname", ""))
    schema = rangevar.get("schemaname")
    return f"{quote_ident(schema)}.{name}" if schema else name


def names_of(node: Node) -> list[str]:
    """The ``sval`` of each String in a name list (``{"List": {"items": [...]}}`` or a list)."""
    items = node.get("List", {}).get("items", []) if isinstance(node, dict) else node
    return [item["String"]["sval"] for item in items if "String" in item]


def object_key(names: list[str]) -> str:
    """``["s", "t"]`` -> ``s.t``; ``["t"]`` -> ``public.t`` (matches rel_key)."""
    return ".".join(names) if len(names) > 1 else f"public.{names[0]}"


def dotted(names: list[str]) -> str:
    return ".".join(quote_ident(name) for name in names)


def const_value(node: Node) -> str | int | float | bool | None:
    """Value of an ``A_Const`` (``{"ival": {}}`` is 0: zero values are omitted)."""
    const = node.get("A_Const")
    if const is None:
        return None
    if "ival" in const:
        return int(const["ival"].get("ival", 0))
    if "sval" in const:
        return str(const["sval"].get("sval", ""))
    if "fval" in const:
        return float(const["fval"].get("fval", "0"))
    if "boolval" in const:
        return bool(const["boolval"].get("boolval", False))
    return None


def func_names(node: Any) -> list[str]:
    """Names of every function called anywhere inside an expression tree (last name part)."""
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            call = item.get("FuncCall")
            if call is not None:
                found.append(names_of(call.get("funcname", []))[-1])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
