"""Constraints compiled to predicates that do the least work per call.

A constraint reads one context value and tests it. Tests that cost more than a set lookup
(number, date and version parsing, regexes, CIDR ranges, substring search) remember their
answer per distinct value in a small table, so a value seen before costs two dict lookups:
``environment``, ``appName``, an app version or a plan name repeat across requests. The
table is bounded (MEMO_SIZE entries, then cleared) so unique values (user ids) cannot grow it.

Which values compile, and how, follows the reference engine: see `compile_constraint`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network
from types import CodeType
from typing import Any, Final

from nonstop.flags.engine._base import (
    EPSILON,
    OPERATORS,
    ORDINAL_OPERATORS,
    STANDARD_FIELDS,
    STRING_OPERATORS,
    Context,
    Environment,
    FlagOff,
    Predicate,
    Problems,
    always,
    escaped_string_ok,
    never,
    now_text,
    quote,
    to_str,
    trim_rule_whitespace,
    unescaped_string,
)
from nonstop.flags.engine._regex import RegexTranslationError, compile_rust_regex
from nonstop.flags.engine._values import (
    DATE_GRAMMAR,
    NUM_GRAMMAR,
    SEMVER_GRAMMAR,
    IpNet,
    parse_datetime_ns,
    parse_f64,
    parse_ip,
    parse_ipv4_int,
    parse_network,
    parse_semver,
)

MEMO_SIZE: Final = 4096
Test = Callable[["str | None"], bool]


@dataclass(frozen=True)
class Constraint:
    context_name: str
    operator: str
    values: tuple[str, ...] | None
    value: str | None
    inverted: bool
    case_insensitive: bool


def on_value(name: str, test: Test, env: Environment, memo: bool) -> Predicate:
    """A predicate that reads context field `name` (top level, then properties) and tests it.

    On ``currentTime`` a missing value is "now" from the injected clock, as in the SDK."""
    now = now_text(env) if name == "currentTime" else None
    standard = name in STANDARD_FIELDS
    cache: dict[str | None, bool] = {}

    def read(ctx: Context) -> str | None:
        v = ctx.get(name) if standard else None
        if v is None:
            props = ctx.get("properties")
            if props:
                v = props.get(name)
            if v is None:
                return now() if now is not None else None
        return v if v.__class__ is str else to_str(v)

    if not memo:
        if standard or now is not None:
            return lambda ctx: test(read(ctx))

        def plain(ctx: Context) -> bool:
            props = ctx.get("properties")
            v = props.get(name) if props else None
            if v is not None and v.__class__ is not str:
                v = to_str(v)
            return test(v)

        return plain

    def remembered(ctx: Context) -> bool:
        v = read(ctx)
        answer = cache.get(v)
        if answer is None:
            answer = test(v)
            if len(cache) >= MEMO_SIZE:
                cache.clear()
            cache[v] = answer
        return answer

    return remembered


@dataclass(frozen=True)
class Check:
    """A compiled constraint: read context field `field`, then

    - kind "const": the answer is `data` (a bool), whatever the context says;
    - kind "in" / "not_in": membership of the value in `data` (a frozenset);
    - kind "test": `data(value)`, remembered per value when `memo`."""

    field: str
    kind: str
    data: Any
    memo: bool = False


def compile_constraint(c: Constraint, path: str, problems: Problems, env: Environment) -> Check:
    """One constraint; FlagOff where the reference engine cannot compile it."""
    op = c.operator
    if op.startswith("SEMVER") and op in ORDINAL_OPERATORS and (c.value or "").startswith("v"):
        # The reference engine writes "false" for this constraint before reading anything else.
        problems.add(
            f"{path}.value",
            f'expected a semantic version without a "v" prefix, got {quote(c.value)}'
            " (it never matches)",
        )
        return Check(c.context_name, "const", False)
    name = c.context_name
    if name not in STANDARD_FIELDS:
        decoded = unescaped_string(name)
        if decoded is None:
            problems.add(
                f"{path}.contextName",
                f"unsupported characters in {quote(name)} (the flag is always off)",
            )
            raise FlagOff
        name = decoded
    if op in ("IN", "NOT_IN"):
        values = _checked_values(c, path, problems)
        if not values:
            return Check(name, "const", (op == "NOT_IN") != c.inverted)
        is_in = (op == "IN") != c.inverted
        return Check(name, "in" if is_in else "not_in", frozenset(values))
    if op in STRING_OPERATORS:
        test, memo = _string_test(c, path, problems)
    elif op in ORDINAL_OPERATORS:
        test, memo = _ordinal_test(c, path, problems), True
    elif op == "REGEX":
        test, memo = _regex_test(c, path, problems), True
    elif op == "IN_CIDR":
        test, memo = _cidr_test(c, path, problems), True
    else:
        problems.add(
            f"{path}.operator",
            f"unknown operator {quote(op)}, expected one of {', '.join(OPERATORS)}"
            " (the flag is always off)",
        )
        raise FlagOff
    return Check(name, "test", _invert(test, c.inverted), memo)


def _cost(check: Check) -> int:
    if check.kind in ("in", "not_in"):
        return 0
    return 1 if not check.memo else 2


def conjunction(checks: list[Check], base: Predicate, env: Environment) -> Predicate:
    """One function for "every check holds, then `base`": each context field is read once,
    on first use, and the checks run cheapest first, stopping at the first that fails.

    The function is generated from a template; names and values reach it only as bound
    constants (N0, S1...), never as source text."""
    if any(c.kind == "const" and not c.data for c in checks) or base is never:
        return never
    # Cheapest first (set lookups, then plain tests, then remembered ones): all checks are
    # pure and must all hold, so the order changes only how soon a failing one is found.
    checks = sorted((c for c in checks if c.kind != "const"), key=_cost)
    if not checks:
        return base
    namespace: dict[str, Any] = {
        "BASE": base,
        "TO_STR": to_str,
        "SIZE": MEMO_SIZE,
        "NOW": now_text(env),
        "STR": str,
    }
    lines = ["def conjunction(ctx):", "    props = ctx.get('properties')"]
    slots: dict[str, str] = {}
    for j, check in enumerate(checks):
        v = slots.get(check.field)
        if v is None:
            v = slots[check.field] = f"v{len(slots)}"
            namespace[f"N{v}"] = check.field
            if check.field in STANDARD_FIELDS:
                lines += [
                    f"    {v} = ctx.get(N{v})",
                    f"    if {v} is None and props:",
                    f"        {v} = props.get(N{v})",
                ]
            else:
                lines.append(f"    {v} = props.get(N{v}) if props else None")
            lines += [
                f"    if {v} is not None and {v}.__class__ is not STR:",
                f"        {v} = TO_STR({v})",
            ]
            if check.field == "currentTime" and env.clock is not None:
                lines += [f"    if {v} is None:", f"        {v} = NOW()"]
        if check.kind == "in":
            namespace[f"S{j}"] = check.data
            lines.append(f"    if {v} is None or {v} not in S{j}: return False")
        elif check.kind == "not_in":
            namespace[f"S{j}"] = check.data
            lines.append(f"    if {v} is not None and {v} in S{j}: return False")
        elif check.memo:
            namespace[f"T{j}"] = check.data
            namespace[f"M{j}"] = {}
            lines += [
                f"    r = M{j}.get({v})",
                "    if r is None:",
                f"        r = T{j}({v})",
                f"        if len(M{j}) >= SIZE: M{j}.clear()",
                f"        M{j}[{v}] = r",
                "    if not r: return False",
            ]
        else:
            namespace[f"T{j}"] = check.data
            lines.append(f"    if not T{j}({v}): return False")
    lines.append("    return True" if base is always else "    return BASE(ctx)")
    exec(_code("\n".join(lines)), namespace)  # the template above; constants bound by name
    generated: Predicate = namespace["conjunction"]
    return generated


@functools.lru_cache(maxsize=1024)
def _code(source: str) -> CodeType:
    """Compiled once per shape: thousands of flags with the same constraint kinds share it."""
    code: CodeType = compile(source, "<flag constraints>", "exec")
    return code


def _invert(test: Test, inverted: bool) -> Test:
    if not inverted:
        return test
    return lambda v: not test(v)


def _checked_values(c: Constraint, path: str, problems: Problems) -> tuple[str, ...]:
    values = c.values or ()
    for i, v in enumerate(values):
        if not escaped_string_ok(v):
            problems.add(
                f"{path}.values[{i}]",
                f"a value may not end with a backslash, got {quote(v)} (the flag is always off)",
            )
            raise FlagOff
    return values


def _membership(is_in: bool, values: frozenset[str]) -> Test:
    if is_in:
        return lambda v: v is not None and v in values
    return lambda v: v is None or v not in values


def list_predicate(is_in: bool, values: frozenset[str], name: str, env: Environment) -> Predicate:
    """IN / NOT_IN on a context field (also used by the userWithId strategy)."""
    if not values:
        return never if is_in else always
    return on_value(name, _membership(is_in, values), env, memo=False)


def _string_test(c: Constraint, path: str, problems: Problems) -> tuple[Test, bool]:
    values = _checked_values(c, path, problems)
    if not values:
        problems.add(
            f"{path}.values", f"{c.operator} needs at least one value (the flag is always off)"
        )
        raise FlagOff
    fold = c.case_insensitive
    items = tuple(v.lower() for v in values) if fold else values
    if c.operator == "STR_CONTAINS":

        def contains(v: str | None) -> bool:
            if v is None:
                return False
            if fold:
                v = v.lower()
            return any(item in v for item in items)

        return contains, True
    starts = c.operator == "STR_STARTS_WITH"

    def affix(v: str | None) -> bool:
        if v is None:
            return False
        if fold:
            v = v.lower()
        return v.startswith(items) if starts else v.endswith(items)

    return affix, False


def _ordinal_test(c: Constraint, path: str, problems: Problems) -> Test:
    if c.value is None:
        problems.add(f"{path}.value", f"{c.operator} needs a value (the flag is always off)")
        raise FlagOff
    text = trim_rule_whitespace(c.value)
    symbol = ORDINAL_OPERATORS[c.operator]
    kind = c.operator.split("_")[0]
    # The reference engine picks the comparison from the shape of the value, date first.
    if DATE_GRAMMAR.fullmatch(text):
        target: Any = parse_datetime_ns(text)
        if target is None:
            problems.add(f"{path}.value", f"invalid date {quote(c.value)} (the flag is always off)")
            raise FlagOff
        _note_shape(c, kind, "DATE", "dates", path, problems)
        return _compare(symbol, target, parse_datetime_ns, exact=True)
    if SEMVER_GRAMMAR.fullmatch(text):
        target = parse_semver(text)
        if target is None:
            problems.add(
                f"{path}.value",
                f"invalid semantic version {quote(c.value)} (the flag is always off)",
            )
            raise FlagOff
        _note_shape(c, kind, "SEMVER", "versions", path, problems)
        return _compare(symbol, target, parse_semver, exact=True)
    if NUM_GRAMMAR.fullmatch(text):
        _note_shape(c, kind, "NUM", "numbers", path, problems)
        return _compare(symbol, float(text), parse_f64, exact=False)
    expected = {
        "NUM": "a number",
        "DATE": "an RFC 3339 date like 2022-01-29T13:00:00.000Z",
        "SEMVER": "a semantic version",
    }[kind]
    problems.add(
        f"{path}.value", f"expected {expected}, got {quote(c.value)} (the flag is always off)"
    )
    raise FlagOff


def _note_shape(
    c: Constraint, kind: str, shape: str, what: str, path: str, problems: Problems
) -> None:
    if kind != shape:
        problems.add(f"{path}.value", f"{c.operator} compares {what} because the value is one")


def _compare(symbol: str, target: Any, parse: Callable[[str], Any], exact: bool) -> Test:
    def test(v: str | None) -> bool:
        if v is None:
            return False
        x = parse(v)
        if x is None:
            return False
        if symbol == "==":
            return bool(x == target) if exact else bool(abs(x - target) < EPSILON)
        if symbol == ">":
            return bool(x > target)
        if symbol == ">=":
            return bool(x >= target)
        if symbol == "<":
            return bool(x < target)
        return bool(x <= target)

    return test


def _regex_test(c: Constraint, path: str, problems: Problems) -> Test:
    """REGEX reads `value` only; without one the pattern is empty and matches any value."""
    pattern = c.value if c.value is not None else ""
    where = f"{path}.value"
    if not escaped_string_ok(pattern):
        problems.add(
            where,
            f"a pattern may not end with a backslash, got {quote(pattern)}"
            " (the flag is always off)",
        )
        raise FlagOff
    if c.value is None and c.values:
        problems.add(f"{path}.values", "REGEX reads value, not values (it matches any value)")
    try:
        search = compile_rust_regex(pattern, c.case_insensitive).search
    except RegexTranslationError as exc:
        problems.add(
            where, f"invalid regular expression {quote(pattern)}: {exc} (it never matches)"
        )
        return lambda v: False
    return lambda v: v is not None and search(v) is not None


def _cidr_test(c: Constraint, path: str, problems: Problems) -> Test:
    values = _checked_values(c, path, problems)
    if not values:
        problems.add(f"{path}.values", "IN_CIDR needs at least one value (the flag is always off)")
        raise FlagOff
    networks = []
    for i, v in enumerate(values):
        net = parse_network(v)
        if net is None:
            problems.add(
                f"{path}.values[{i}]",
                f"expected an IP address or CIDR range, got {quote(v)} (ignored)",
            )
        else:
            networks.append(net)
    return ip_test(tuple(networks))


def ip_test(networks: tuple[IpNet, ...]) -> Test:
    """Is the value an address inside one of `networks`? IPv4 is checked on integers."""
    v4 = tuple(
        (int(net.network_address), int(net.netmask))
        for net in networks
        if isinstance(net, IPv4Network)
    )
    v6 = tuple(net for net in networks if not isinstance(net, IPv4Network))
    if not networks:
        return lambda v: False

    def in_networks(v: str | None) -> bool:
        if v is None:
            return False
        n = parse_ipv4_int(v)
        if n is not None:
            for net, mask in v4:  # noqa: SIM110 - a plain loop is faster than any() here
                if n & mask == net:
                    return True
            return False
        if not v6 or ":" not in v:
            return False
        ip = parse_ip(v)
        return ip is not None and any(ip in net for net in v6)

    return in_networks
