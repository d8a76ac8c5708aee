"""The parser's JSON, read with msgspec (C): statements cut apart undecoded, then each tree
decoded, just before its rules run, into plain dicts of what the rules and the state read.

libpg_query writes ``{"version":N,"stmts":[ENTRY,...]}``, each ENTRY
``{"stmt":{"Kind":{...}},"stmt_location":L,"stmt_len":N}`` (a field equal to 0 is left out).
``cut`` decodes that frame only: each statement's node stays a ``msgspec.Raw``, a view of its
JSON text, so the kinds no rule reads (INSERT, most SELECTs) are never decoded, and the others
one at a time (``node``). On the 20,002-statement benchmark corpus the cut takes ~20 ms and
decoding ALTER TABLE trees ~11 ms, against ~50-75 ms and ~25 ms for a regular expression over
the text and ``json`` (docs/decisions/0590-lint-reads-the-parser-json-with-msgspec.md).

Most kinds decode whole, as ``json.loads`` would. For the kinds whose trees are mostly what no
rule reads, a ``TypedDict`` below lists the fields read, and msgspec skips the others without
building them. A rule that starts reading another field of one of these kinds must add it
here; tests/migrate_lint/test_lazy.py compares every finding with the full-tree path's.
"""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec

Node = dict[str, Any]


class Entry(msgspec.Struct):
    """One RawStmt: ``{kind: node}`` with the node undecoded, and its byte span."""

    stmt: dict[str, msgspec.Raw]
    stmt_location: int = 0
    stmt_len: int = 0


class Tree(msgspec.Struct):
    stmts: list[Entry] = []


class IndexStmt(TypedDict, total=False):
    """CREATE INDEX: its name, table and CONCURRENTLY, never the columns or the predicate."""

    idxname: str
    relation: Node
    concurrent: bool


class DataStmt(TypedDict, total=False):
    """UPDATE and DELETE: the table, and whether the statement has its own WHERE clause
    (``unbatched-backfill``); the clause itself is left undecoded."""

    relation: Node
    whereClause: msgspec.Raw


class _FuncCall(TypedDict, total=False):
    funcname: list[Node]
    args: list[Node]


class _FuncCallNode(TypedDict, total=False):
    FuncCall: _FuncCall


class _ResTarget(TypedDict, total=False):
    val: _FuncCallNode


class _ResTargetNode(TypedDict, total=False):
    ResTarget: _ResTarget


class SelectStmt(TypedDict, total=False):
    """SELECT whose text holds ``set_config`` (any other is not decoded at all): only the
    function calls at the top of its target list, where the state looks for
    ``set_config('lock_timeout', ...)``."""

    targetList: list[_ResTargetNode]


_WHOLE: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_PARTS: dict[str, msgspec.json.Decoder[Any]] = {
    "IndexStmt": msgspec.json.Decoder(IndexStmt),
    "UpdateStmt": msgspec.json.Decoder(DataStmt),
    "DeleteStmt": msgspec.json.Decoder(DataStmt),
    "SelectStmt": msgspec.json.Decoder(SelectStmt),
}
_TREE = msgspec.json.Decoder(Tree)


class Unexpected(Exception):
    """The JSON is not laid out as expected (a pglast upgrade could do that)."""


def cut(raw: str) -> list[Entry]:
    """The statements of a tree, each with its node undecoded."""
    try:
        return _TREE.decode(raw).stmts
    except msgspec.MsgspecError as exc:
        raise Unexpected(str(exc)) from None


def node(kind: str, raw: msgspec.Raw) -> Node:
    """The tree of a ``kind`` statement as the rules read it: the fields listed above for the
    kinds listed there, else the whole tree. A node that does not fit its schema (a field of
    another type after a parser upgrade) is decoded whole, which is always correct."""
    if kind == "SelectStmt" and b"set_config" not in bytes(raw):
        return {}  # the state reads a SELECT only for set_config(...): a text search skips it
    decoder = _PARTS.get(kind, _WHOLE)
    try:
        found: Node = decoder.decode(raw)
    except msgspec.ValidationError:
        found = _WHOLE.decode(raw)
    return found


def whole(raw: msgspec.Raw) -> Node:
    """The whole tree of a node."""
    found: Node = _WHOLE.decode(raw)
    return found
