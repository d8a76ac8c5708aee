"""Compile an Unleash features document into closures, once, with every problem named.

The decisions follow Unleash's reference engine (yggdrasil) bit for bit:

- a flag is on when its switch is on, its parent dependencies hold, and any strategy
  matches (no strategies: on);
- a strategy matches when its own rule and every constraint (its own, then its
  segments') hold; a missing segment makes the strategy never match;
- rollouts hash ``"{groupId}:{stickiness value}"`` with MurmurHash3 (seed 0) into 1..100
  and match when the bucket is <= the percentage; variants hash the same key with seed
  86028157 into 1..total weight;
- values the reference engine cannot compile (a rollout of "150", a NUM_GT value of
  "abc", a date without its time zone...) turn the whole flag off; an unknown operator,
  an invalid regex or an unknown strategy only make that one part never match.

Each of those is also reported as a `Problem`; the engine decides whether to refuse the
document (strict, the default) or to evaluate it like the SDK would (lenient).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import mmh3

from nonstop.flags.engine._problems import Problem
from nonstop.flags.engine._regex import RegexTranslationError, compile_rust_regex
from nonstop.flags.engine._values import (
    DATE_GRAMMAR,
    NUM_GRAMMAR,
    SEMVER_GRAMMAR,
    parse_datetime_ns,
    parse_f64,
    parse_ip,
    parse_network,
    parse_semver,
    parse_usize,
)

Context = Mapping[str, Any]
Predicate = Callable[[Context], bool]
Getter = Callable[[Context], "str | None"]

VARIANT_SEED: Final = 86028157
STANDARD_FIELDS: Final = (
    "userId",
    "sessionId",
    "remoteAddress",
    "environment",
    "appName",
    "currentTime",
)
STRING_OPERATORS: Final = ("IN", "NOT_IN", "STR_CONTAINS", "STR_STARTS_WITH", "STR_ENDS_WITH")
ORDINAL_OPERATORS: Final = {
    "NUM_EQ": "==",
    "NUM_GT": ">",
    "NUM_GTE": ">=",
    "NUM_LT": "<",
    "NUM_LTE": "<=",
    "DATE_AFTER": ">",
    "DATE_BEFORE": "<",
    "SEMVER_EQ": "==",
    "SEMVER_GT": ">",
    "SEMVER_GTE": ">=",
    "SEMVER_LT": "<",
    "SEMVER_LTE": "<=",
}
OPERATORS: Final = (*STRING_OPERATORS, *ORDINAL_OPERATORS, "REGEX", "IN_CIDR")
STRATEGIES: Final = (
    "default",
    "userWithId",
    "gradualRolloutUserId",
    "gradualRolloutSessionId",
    "gradualRolloutRandom",
    "flexibleRollout",
    "remoteAddress",
    "applicationHostname",
)
_EPSILON: Final = 2.220446049250313e-16


def _false(ctx: Context) -> bool:
    return False


def _true(ctx: Context) -> bool:
    return True


class VariantFailure(Exception):
    """Variants whose weights add up to 0: the reference engine fails the whole call."""


class FlagOff(Exception):
    """Raised while compiling a part the reference engine cannot compile: the flag is off."""


@dataclass(frozen=True)
class Environment:
    """What evaluation may need from outside: randomness, a clock, the host name."""

    rng: random.Random
    clock: Callable[[], float] | None
    hostname: str | None


# ---------------------------------------------------------------- context access


def _to_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_getter(name: str) -> Getter:
    """Read a context field: the top-level field first, then ``properties[name]``."""
    if name in STANDARD_FIELDS:

        def get_standard(ctx: Context) -> str | None:
            value = ctx.get(name)
            if value is None:
                props = ctx.get("properties")
                if not props:
                    return None
                value = props.get(name)
                if value is None:
                    return None
            return value if value.__class__ is str else _to_str(value)

        return get_standard

    def get_property(ctx: Context) -> str | None:
        props = ctx.get("properties")
        if not props:
            return None
        value = props.get(name)
        if value is None or value.__class__ is str:
            return value
        return _to_str(value)

    return get_property


def current_time_ns_getter(env: Environment) -> Callable[[Context], int | None]:
    raw = field_getter("currentTime")
    clock = env.clock

    def get(ctx: Context) -> int | None:
        text = raw(ctx)
        if text is None:
            return None if clock is None else int(clock()) * 1_000_000_000
        return parse_datetime_ns(text)

    return get


# ---------------------------------------------------------------- rule-language quirks


def escaped_string_ok(value: str) -> bool:
    """An escaped, quoted value survives the reference rule language unless it ends in `\\`."""
    return not value.endswith("\\")


def unescaped_string(value: str) -> str | None:
    """What the reference engine reads back from ``"{value}"`` written without escaping."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith('\\"', i):
            out.append('"')
            i += 2
        elif value[i] == '"':
            return None
        else:
            out.append(value[i])
            i += 1
    if value.endswith("\\") and not value.endswith('\\"'):
        return None
    return "".join(out)


def _trim_rule_whitespace(value: str) -> str:
    return value.strip(" \t")


# ---------------------------------------------------------------- problems


@dataclass
class Problems:
    items: list[Problem] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message))


def quote(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


# ---------------------------------------------------------------- constraints


@dataclass(frozen=True)
class Constraint:
    context_name: str
    operator: str
    values: tuple[str, ...] | None
    value: str | None
    inverted: bool
    case_insensitive: bool


def compile_constraint(c: Constraint, path: str, problems: Problems, env: Environment) -> Predicate:
    """A predicate for one constraint; FlagOff where the reference engine cannot compile it."""
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
    op = c.operator
    if op in STRING_OPERATORS:
        pred = _string_constraint(c, name, path, problems)
    elif op in ORDINAL_OPERATORS:
        if op.startswith("SEMVER") and c.value is not None and c.value.startswith("v"):
            problems.add(
                f"{path}.value",
                f'expected a semantic version without a "v" prefix, got {quote(c.value)}',
            )
            return _false
        pred = _ordinal_constraint(c, name, path, problems, env)
    elif op == "REGEX":
        pred = _regex_constraint(c, name, path, problems)
    elif op == "IN_CIDR":
        pred = _cidr_constraint(c, name, path, problems)
    else:
        problems.add(
            f"{path}.operator",
            f"unknown operator {quote(op)}, expected one of {', '.join(OPERATORS)}"
            " (the flag is always off)",
        )
        raise FlagOff
    if c.inverted:
        inner = pred

        def inverted(ctx: Context) -> bool:
            return not inner(ctx)

        return inverted
    return pred


def _string_constraint(c: Constraint, name: str, path: str, problems: Problems) -> Predicate:
    values = c.values or ()
    for i, v in enumerate(values):
        if not escaped_string_ok(v):
            problems.add(
                f"{path}.values[{i}]",
                f"a value may not end with a backslash, got {quote(v)} (the flag is always off)",
            )
            raise FlagOff
    get = field_getter(name)
    if c.operator in ("IN", "NOT_IN"):
        return _list_constraint(c.operator == "IN", frozenset(values), get)
    if not values:
        problems.add(
            f"{path}.values", f"{c.operator} needs at least one value (the flag is always off)"
        )
        raise FlagOff
    fold = c.case_insensitive
    items = tuple(v.lower() for v in values) if fold else tuple(values)
    if c.operator == "STR_STARTS_WITH":
        prefixes = items

        def starts(ctx: Context) -> bool:
            v = get(ctx)
            if v is None:
                return False
            return (v.lower() if fold else v).startswith(prefixes)

        return starts
    if c.operator == "STR_ENDS_WITH":
        suffixes = items

        def ends(ctx: Context) -> bool:
            v = get(ctx)
            if v is None:
                return False
            return (v.lower() if fold else v).endswith(suffixes)

        return ends

    def contains(ctx: Context) -> bool:
        v = get(ctx)
        if v is None:
            return False
        if fold:
            v = v.lower()
        return any(item in v for item in items)

    return contains


def _list_constraint(is_in: bool, values: frozenset[str], get: Getter) -> Predicate:
    if not values:
        return _false if is_in else _true
    if is_in:

        def member(ctx: Context) -> bool:
            v = get(ctx)
            return v is not None and v in values

        return member

    def not_member(ctx: Context) -> bool:
        v = get(ctx)
        return v is None or v not in values

    return not_member


def _ordinal_constraint(
    c: Constraint, name: str, path: str, problems: Problems, env: Environment
) -> Predicate:
    if c.value is None:
        problems.add(f"{path}.value", f"{c.operator} needs a value (the flag is always off)")
        raise FlagOff
    text = _trim_rule_whitespace(c.value)
    symbol = ORDINAL_OPERATORS[c.operator]
    kind = c.operator.split("_")[0]
    # The reference engine picks the comparison from the shape of the value, date first.
    if DATE_GRAMMAR.fullmatch(text):
        target = parse_datetime_ns(text)
        if target is None:
            problems.add(f"{path}.value", f"invalid date {quote(c.value)} (the flag is always off)")
            raise FlagOff
        if kind != "DATE":
            problems.add(
                f"{path}.value", f"{c.operator} compares dates because the value is a date"
            )
        get_ns = (
            current_time_ns_getter(env)
            if name == "currentTime"
            else _parsed(field_getter(name), parse_datetime_ns)
        )
        return _ordinal(symbol, target, get_ns, exact=True)
    if SEMVER_GRAMMAR.fullmatch(text):
        version = parse_semver(text)
        if version is None:
            problems.add(
                f"{path}.value",
                f"invalid semantic version {quote(c.value)} (the flag is always off)",
            )
            raise FlagOff
        if kind != "SEMVER":
            problems.add(
                f"{path}.value", f"{c.operator} compares versions because the value is a version"
            )
        return _ordinal(
            symbol, version, _parsed(_value_getter(name, env), parse_semver), exact=True
        )
    if NUM_GRAMMAR.fullmatch(text):
        number = float(text)
        if kind != "NUM":
            problems.add(
                f"{path}.value", f"{c.operator} compares numbers because the value is a number"
            )
        return _ordinal(symbol, number, _parsed(_value_getter(name, env), parse_f64), exact=False)
    expected = {
        "NUM": "a number",
        "DATE": "an RFC 3339 date like 2022-01-29T13:00:00.000Z",
        "SEMVER": "a semantic version",
    }
    problems.add(
        f"{path}.value", f"expected {expected[kind]}, got {quote(c.value)} (the flag is always off)"
    )
    raise FlagOff


def _value_getter(name: str, env: Environment) -> Getter:
    if name != "currentTime":
        return field_getter(name)
    raw = field_getter(name)
    clock = env.clock

    def get(ctx: Context) -> str | None:
        value = raw(ctx)
        if value is None and clock is not None:
            import time as _time  # only formatting, the clock comes from the environment

            return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(clock()))
        return value

    return get


def _parsed(get: Getter, parse: Callable[[str], Any]) -> Callable[[Context], Any]:
    def get_parsed(ctx: Context) -> Any:
        v = get(ctx)
        return None if v is None else parse(v)

    return get_parsed


def _ordinal(symbol: str, target: Any, get: Callable[[Context], Any], exact: bool) -> Predicate:
    if symbol == "==":
        if exact:

            def eq(ctx: Context) -> bool:
                v = get(ctx)
                return v is not None and v == target

            return eq

        def feq(ctx: Context) -> bool:
            v = get(ctx)
            return v is not None and abs(v - target) < _EPSILON

        return feq
    if symbol == ">":

        def gt(ctx: Context) -> bool:
            v = get(ctx)
            return v is not None and v > target

        return gt
    if symbol == ">=":

        def ge(ctx: Context) -> bool:
            v = get(ctx)
            return v is not None and v >= target

        return ge
    if symbol == "<":

        def lt(ctx: Context) -> bool:
            v = get(ctx)
            return v is not None and v < target

        return lt

    def le(ctx: Context) -> bool:
        v = get(ctx)
        return v is not None and v <= target

    return le


def _regex_constraint(c: Constraint, name: str, path: str, problems: Problems) -> Predicate:
    if c.value is not None:
        patterns: tuple[tuple[str, str], ...] = ((f"{path}.value", c.value),)
    elif c.values:
        patterns = tuple((f"{path}.values[{i}]", v) for i, v in enumerate(c.values))
    else:
        patterns = ((f"{path}.value", ""),)
    compiled = []
    for where, pattern in patterns:
        if not escaped_string_ok(pattern):
            problems.add(
                where,
                f"a pattern may not end with a backslash, got {quote(pattern)}"
                " (the flag is always off)",
            )
            raise FlagOff
        try:
            compiled.append(compile_rust_regex(pattern, c.case_insensitive).search)
        except RegexTranslationError as exc:
            problems.add(
                where, f"invalid regular expression {quote(pattern)}: {exc} (it never matches)"
            )
    if not compiled:
        return _false
    get = field_getter(name)
    searches = tuple(compiled)

    def matches(ctx: Context) -> bool:
        v = get(ctx)
        if v is None:
            return False
        return any(search(v) is not None for search in searches)

    return matches


def _cidr_constraint(c: Constraint, name: str, path: str, problems: Problems) -> Predicate:
    if not c.values:
        problems.add(f"{path}.values", "IN_CIDR needs at least one value (the flag is always off)")
        raise FlagOff
    networks = []
    for i, v in enumerate(c.values or ()):
        if not escaped_string_ok(v):
            problems.add(
                f"{path}.values[{i}]",
                f"a value may not end with a backslash, got {quote(v)} (the flag is always off)",
            )
            raise FlagOff
        net = parse_network(v)
        if net is None:
            problems.add(
                f"{path}.values[{i}]",
                f"expected an IP address or CIDR range, got {quote(v)} (ignored)",
            )
        else:
            networks.append(net)
    return _ip_predicate(tuple(networks), field_getter(name))


def _ip_predicate(networks: tuple[Any, ...], get: Getter) -> Predicate:
    if not networks:
        return _false

    def in_networks(ctx: Context) -> bool:
        v = get(ctx)
        if v is None:
            return False
        ip = parse_ip(v)
        if ip is None:
            return False
        return any(ip in net for net in networks)

    return in_networks


# ---------------------------------------------------------------- strategies


@dataclass(frozen=True)
class VariantDef:
    name: str
    weight: int
    stickiness: str | None
    payload: Mapping[str, Any] | None
    overrides: tuple[tuple[str, frozenset[str]], ...]


@dataclass(frozen=True)
class Strategy:
    name: str
    parameters: Mapping[str, str]
    constraints: tuple[Constraint, ...]
    segments: tuple[int, ...]
    variants: tuple[VariantDef, ...] | None


@dataclass(frozen=True)
class CompiledVariants:
    """Variants picked by hashing ``"{group_id}:{stickiness}"``."""

    variants: tuple[VariantDef, ...]
    group_id: str
    results: tuple[dict[str, Any], ...]
    total: int
    seed_getter: Getter
    overrides: tuple[tuple[Getter, frozenset[str], int], ...]


@dataclass(frozen=True)
class CompiledStrategy:
    predicate: Predicate
    reason: str
    variants: CompiledVariants | None  # None: the strategy has no "variants" key
    has_variants_key: bool


def stickiness_getters(stickiness: str | None, env: Environment) -> tuple[Getter, ...] | None:
    """Getters tried in order for a rollout's stickiness; None if the name cannot be compiled."""
    rng = env.rng

    def random_value(ctx: Context) -> str:
        return str(rng.randrange(1, 100))

    if stickiness is None or stickiness == "default":
        return (field_getter("userId"), field_getter("sessionId"), random_value)
    if stickiness == "random":
        return (random_value,)
    if stickiness in STANDARD_FIELDS:
        return (field_getter(stickiness),)
    decoded = unescaped_string(stickiness)
    return None if decoded is None else (field_getter(decoded),)


def rollout_predicate(percentage: int, group_id: str, getters: tuple[Getter, ...]) -> Predicate:
    if percentage == 0:
        return _false
    prefix = group_id + ":"
    hash32 = mmh3.hash
    if len(getters) == 1:
        (only,) = getters

        def single(ctx: Context) -> bool:
            s = only(ctx)
            if s is None:
                return False
            return hash32(prefix + s, 0, False) % 100 + 1 <= percentage

        return single

    def coalesced(ctx: Context) -> bool:
        for get in getters:
            s = get(ctx)
            if s is not None:
                return hash32(prefix + s, 0, False) % 100 + 1 <= percentage
        return False

    return coalesced


def _percentage(strategy: Strategy, key: str, path: str, problems: Problems) -> int | None:
    raw = strategy.parameters.get(key)
    if raw is None:
        problems.add(f"{path}.parameters", f"missing {key} (the strategy never matches)")
        return None
    value = parse_usize(raw)
    if value is None:
        problems.add(
            f"{path}.parameters.{key}",
            f"expected 0..100, got {quote(raw)} (the strategy never matches)",
        )
        return None
    return value


def compile_strategy_rule(
    strategy: Strategy, flag_name: str, path: str, problems: Problems, env: Environment
) -> tuple[Predicate, str]:
    """The strategy's own rule (without constraints) and its OpenFeature reason."""
    params = strategy.parameters
    kind = strategy.name
    if kind == "default":
        return _true, "STATIC"
    if kind == "userWithId":
        raw = params.get("userIds")
        if raw is None:
            problems.add(f"{path}.parameters", "missing userIds (the strategy never matches)")
            return _false, "TARGETING_MATCH"
        ids = [part.strip() for part in raw.split(",")]
        if not all(escaped_string_ok(i) for i in ids):
            problems.add(
                f"{path}.parameters.userIds",
                "a user id may not end with a backslash (the flag is always off)",
            )
            raise FlagOff
        return _list_constraint(True, frozenset(ids), field_getter("userId")), "TARGETING_MATCH"
    if kind in ("gradualRolloutUserId", "gradualRolloutSessionId"):
        pct = _percentage(strategy, "percentage", path, problems)
        group = params.get("groupId")
        if group is None:
            problems.add(f"{path}.parameters", "missing groupId (the strategy never matches)")
        if pct is None or group is None:
            return _false, "SPLIT"
        field_name = "userId" if kind == "gradualRolloutUserId" else "sessionId"
        return _rollout(pct, "percentage", group, (field_getter(field_name),), path, problems)
    if kind == "gradualRolloutRandom":
        pct = _percentage(strategy, "percentage", path, problems)
        if pct is None:
            return _false, "SPLIT"
        if pct >= 100:
            return _true, "STATIC"
        return _random_below(env.rng, pct), "SPLIT"
    if kind == "flexibleRollout":
        pct = _percentage(strategy, "rollout", path, problems)
        if pct is None:
            return _false, "SPLIT"
        getters = stickiness_getters(params.get("stickiness"), env)
        if getters is None:
            problems.add(
                f"{path}.parameters.stickiness", "unsupported characters (the flag is always off)"
            )
            raise FlagOff
        return _rollout(pct, "rollout", params.get("groupId", flag_name), getters, path, problems)
    if kind == "remoteAddress":
        raw = params.get("IPs")
        if raw is None:
            problems.add(f"{path}.parameters", "missing IPs (the strategy never matches)")
            return _false, "TARGETING_MATCH"
        networks = []
        for part in raw.split(","):
            text = unescaped_string(part.strip())
            if text is None:
                problems.add(
                    f"{path}.parameters.IPs",
                    f"unsupported characters in {quote(part.strip())} (the flag is always off)",
                )
                raise FlagOff
            net = parse_network(text)
            if net is None:
                problems.add(
                    f"{path}.parameters.IPs",
                    f"expected an IP address or CIDR range, got {quote(part.strip())} (ignored)",
                )
            else:
                networks.append(net)
        return _ip_predicate(tuple(networks), field_getter("remoteAddress")), "TARGETING_MATCH"
    if kind == "applicationHostname":
        hosts = frozenset(h.strip().lower() for h in params.get("hostNames", "").split(","))
        return (
            _true if env.hostname is not None and env.hostname.lower() in hosts else _false
        ), "TARGETING_MATCH"
    problems.add(
        f"{path}.name",
        f"unknown strategy {quote(kind)}, expected one of {', '.join(STRATEGIES)}"
        " (it never matches)",
    )
    return _false, "DEFAULT"


def _random_below(rng: random.Random, pct: int) -> Predicate:
    """``random < pct`` with random in 1..99, like the reference engine."""

    def random_pick(ctx: Context) -> bool:
        return rng.randrange(1, 100) < pct

    return random_pick


def _rollout(
    pct: int, key: str, group_raw: str, getters: tuple[Getter, ...], path: str, problems: Problems
) -> tuple[Predicate, str]:
    if pct > 100:
        problems.add(
            f"{path}.parameters.{key}", f'expected 0..100, got "{pct}" (the flag is always off)'
        )
        raise FlagOff
    group = unescaped_string(group_raw)
    if group is None:
        problems.add(
            f"{path}.parameters.groupId",
            f"unsupported characters in {quote(group_raw)} (the flag is always off)",
        )
        raise FlagOff
    predicate = rollout_predicate(pct, group, getters)
    return predicate, ("SPLIT" if 0 < pct < 100 else "STATIC")


def all_of(predicates: Sequence[Predicate], last: Predicate) -> Predicate:
    """``last`` and every predicate; constants folded away."""
    preds = tuple(p for p in predicates if p is not _true)
    if any(p is _false for p in preds) or last is _false:
        return _false
    if last is not _true:
        preds = (*preds, last)
    if not preds:
        return _true
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda ctx: a(ctx) and b(ctx)

    def every(ctx: Context) -> bool:
        for p in preds:  # noqa: SIM110 - a plain loop is faster than all() on the hot path
            if not p(ctx):
                return False
        return True

    return every


def any_of(predicates: Sequence[Predicate]) -> Predicate:
    preds = tuple(p for p in predicates if p is not _false)
    if any(p is _true for p in preds):
        return _true
    if not preds:
        return _false
    if len(preds) == 1:
        return preds[0]

    def some(ctx: Context) -> bool:
        for p in preds:  # noqa: SIM110 - a plain loop is faster than any() on the hot path
            if p(ctx):
                return True
        return False

    return some


def seed_getter(stickiness: str | None) -> Getter:
    if stickiness is None or stickiness == "default":
        user, session = field_getter("userId"), field_getter("sessionId")

        def default_seed(ctx: Context) -> str | None:
            v = user(ctx)
            return v if v is not None else session(ctx)

        return default_seed
    if stickiness in ("userId", "sessionId", "environment", "appName", "remoteAddress"):
        return field_getter(stickiness)
    return field_getter(stickiness) if stickiness != "currentTime" else _property_only(stickiness)


def _property_only(name: str) -> Getter:
    def get(ctx: Context) -> str | None:
        props = ctx.get("properties")
        if not props:
            return None
        v = props.get(name)
        return v if v is None or v.__class__ is str else _to_str(v)

    return get


def compile_variants(
    variants: tuple[VariantDef, ...],
    group_id: str,
    stickiness: str | None,
    path: str,
    problems: Problems,
    use_overrides: bool = True,
) -> CompiledVariants | None:
    if not variants:
        return None
    total = sum(v.weight for v in variants)
    if total <= 0:
        problems.add(path, "variant weights add up to 0 (asking for a variant fails)")
    results = tuple(
        {
            "name": v.name,
            **({"payload": dict(v.payload)} if v.payload is not None else {}),
            "enabled": True,
            "feature_enabled": True,
        }
        for v in variants
    )
    overrides = tuple(
        (field_getter(ctx_name), values, index)
        for index, v in enumerate(variants)
        for ctx_name, values in v.overrides
        if use_overrides  # strategy variants ignore overrides in the reference engine
    )
    return CompiledVariants(variants, group_id, results, total, seed_getter(stickiness), overrides)


def pick_variant(cv: CompiledVariants, ctx: Context, rng: random.Random) -> int:
    """Index of the chosen variant."""
    for get, values, index in cv.overrides:
        v = get(ctx)
        if v is not None and v in values:
            return index
    if cv.total <= 0:
        raise VariantFailure(cv.group_id)
    seed = cv.seed_getter(ctx)
    if seed is None:
        target = rng.randrange(1, cv.total + 1)
    else:
        target = mmh3.hash(f"{cv.group_id}:{seed}", VARIANT_SEED, False) % cv.total + 1
    running = 0
    for index, variant in enumerate(cv.variants):
        running += variant.weight
        if running >= target:
            return index
    return len(cv.variants) - 1  # pragma: no cover - weights always reach the target
