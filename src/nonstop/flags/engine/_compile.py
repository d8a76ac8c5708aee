"""Compile strategies and variants, once, into closures; every problem is named.

The decisions follow Unleash's reference engine (yggdrasil) bit for bit:

- a flag is on when its switch is on, its parent dependencies hold, and any strategy
  matches (no strategies: on);
- a strategy matches when every constraint (its own, then its segments') and its own
  rule hold;
- rollouts hash ``"{groupId}:{stickiness value}"`` with MurmurHash3 (seed 0) into 1..100
  and match when the bucket is <= the percentage; variants hash the same key with seed
  86028157 into 1..total weight and take the first variant whose running weight reaches it;
- what the reference engine cannot compile (a rollout of "150", a NUM_GT value of "abc",
  an unknown operator, a missing segment...) turns the whole flag off; an invalid regex, a
  rollout that is not a whole number or an unknown (custom) strategy only make that part
  never match.

Each of those is also reported as a `Problem`; the engine decides whether to refuse the
document (strict, the default) or to evaluate it like the SDK would (lenient).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mmh3

from nonstop.flags.engine._base import (
    STANDARD_FIELDS,
    STRATEGIES,
    VARIANT_SEED,
    Context,
    Environment,
    FlagOff,
    Getter,
    Predicate,
    Problems,
    VariantFailure,
    always,
    escaped_string_ok,
    field_getter,
    never,
    quote,
    to_str,
    unescaped_string,
)
from nonstop.flags.engine._constraints import Constraint, ip_test, list_predicate, on_value
from nonstop.flags.engine._values import parse_network, parse_usize

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
    prefix: str  # "{group_id}:", ready to hash
    cumulative: tuple[int, ...]  # running weights: the first >= the target is chosen


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


def rollout_predicate(
    percentage: int, group_id: str, getters: tuple[Getter, ...], random_last: bool = False
) -> Predicate:
    """`random_last`: the last getter is the random fallback, so a value always exists."""
    if percentage == 0:
        return never
    if percentage >= 100:  # every bucket is in: only a stickiness value is needed
        if random_last:
            return always
        return lambda ctx: any(get(ctx) is not None for get in getters)
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


Rule = tuple[Predicate, str]  # the strategy's own predicate and its OpenFeature reason


@dataclass(frozen=True)
class _Site:
    """One strategy being compiled, and where to report its problems."""

    strategy: Strategy
    flag_name: str
    path: str
    problems: Problems
    env: Environment

    def param(self, key: str) -> str | None:
        return self.strategy.parameters.get(key)

    def missing(self, key: str) -> None:
        self.problems.add(f"{self.path}.parameters", f"missing {key} (the strategy never matches)")


def compile_strategy_rule(
    strategy: Strategy, flag_name: str, path: str, problems: Problems, env: Environment
) -> Rule:
    """The strategy's own rule (without constraints) and its OpenFeature reason."""
    site = _Site(strategy, flag_name, path, problems, env)
    rule = _RULES.get(strategy.name)
    if rule is not None:
        return rule(site)
    problems.add(
        f"{path}.name",
        f"unknown strategy {quote(strategy.name)}, expected one of {', '.join(STRATEGIES)}"
        " (it never matches)",
    )
    return never, "DEFAULT"


def _default(site: _Site) -> Rule:
    return always, "STATIC"


def _user_with_id(site: _Site) -> Rule:
    raw = site.param("userIds")
    if raw is None:
        site.missing("userIds")
        return never, "TARGETING_MATCH"
    ids = [part.strip() for part in raw.split(",")]
    if not all(escaped_string_ok(i) for i in ids):
        site.problems.add(
            f"{site.path}.parameters.userIds",
            "a user id may not end with a backslash (the flag is always off)",
        )
        raise FlagOff
    return list_predicate(True, frozenset(ids), "userId", site.env), "TARGETING_MATCH"


def _gradual_rollout(field_name: str) -> Callable[[_Site], Rule]:
    def rule(site: _Site) -> Rule:
        pct = _percentage(site.strategy, "percentage", site.path, site.problems)
        group = site.param("groupId")
        if group is None:
            site.missing("groupId")
        if pct is None or group is None:
            return never, "SPLIT"
        getters = (field_getter(field_name),)
        return _rollout(pct, "percentage", group, getters, site.path, site.problems)

    return rule


def _gradual_rollout_random(site: _Site) -> Rule:
    pct = _percentage(site.strategy, "percentage", site.path, site.problems)
    if pct is None:
        return never, "SPLIT"
    if pct >= 100:
        return always, "STATIC"
    return _random_below(site.env.rng, pct), "SPLIT"


def _flexible_rollout(site: _Site) -> Rule:
    pct = _percentage(site.strategy, "rollout", site.path, site.problems)
    if pct is None:
        return never, "SPLIT"
    stickiness = site.param("stickiness")
    getters = stickiness_getters(stickiness, site.env)
    if getters is None:
        site.problems.add(
            f"{site.path}.parameters.stickiness",
            "unsupported characters (the flag is always off)",
        )
        raise FlagOff
    random_last = stickiness in (None, "default", "random")
    group = site.strategy.parameters.get("groupId", site.flag_name)  # "" is a group id too
    return _rollout(pct, "rollout", group, getters, site.path, site.problems, random_last)


def _remote_address(site: _Site) -> Rule:
    raw = site.param("IPs")
    if raw is None:
        site.missing("IPs")
        return never, "TARGETING_MATCH"
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        text = unescaped_string(part)
        if text is None:
            site.problems.add(
                f"{site.path}.parameters.IPs",
                f"unsupported characters in {quote(part)} (the flag is always off)",
            )
            raise FlagOff
        net = parse_network(text)
        if net is None:
            site.problems.add(
                f"{site.path}.parameters.IPs",
                f"expected an IP address or CIDR range, got {quote(part)} (ignored)",
            )
        else:
            networks.append(net)
    test = ip_test(tuple(networks))
    return on_value("remoteAddress", test, site.env, memo=True), "TARGETING_MATCH"


def _application_hostname(site: _Site) -> Rule:
    hosts = frozenset(h.strip().lower() for h in (site.param("hostNames") or "").split(","))
    hostname = site.env.hostname
    on = hostname is not None and hostname.lower() in hosts
    return (always if on else never), "TARGETING_MATCH"


_RULES: dict[str, Callable[[_Site], Rule]] = {
    "default": _default,
    "userWithId": _user_with_id,
    "gradualRolloutUserId": _gradual_rollout("userId"),
    "gradualRolloutSessionId": _gradual_rollout("sessionId"),
    "gradualRolloutRandom": _gradual_rollout_random,
    "flexibleRollout": _flexible_rollout,
    "remoteAddress": _remote_address,
    "applicationHostname": _application_hostname,
}


def _random_below(rng: random.Random, pct: int) -> Predicate:
    """``random < pct`` with random in 1..99, like the reference engine."""

    def random_pick(ctx: Context) -> bool:
        return rng.randrange(1, 100) < pct

    return random_pick


def _rollout(
    pct: int,
    key: str,
    group_raw: str,
    getters: tuple[Getter, ...],
    path: str,
    problems: Problems,
    random_last: bool = False,
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
    predicate = rollout_predicate(pct, group, getters, random_last)
    return predicate, ("SPLIT" if 0 < pct < 100 else "STATIC")


def all_of(predicates: Sequence[Predicate], last: Predicate) -> Predicate:
    """``last`` and every predicate; constants folded away."""
    preds = tuple(p for p in predicates if p is not always)
    if any(p is never for p in preds) or last is never:
        return never
    if last is not always:
        preds = (*preds, last)
    if not preds:
        return always
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
    preds = tuple(p for p in predicates if p is not never)
    if any(p is always for p in preds):
        return always
    if not preds:
        return never
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
        session = field_getter("sessionId")

        def default_seed(ctx: Context) -> str | None:
            v = ctx.get("userId")
            if v.__class__ is str:  # the common case, read inline
                return v
            if v is None:
                props = ctx.get("properties")
                v = props.get("userId") if props else None
                if v is None:
                    return session(ctx)
            return v if v.__class__ is str else to_str(v)

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
        return v if v is None or v.__class__ is str else to_str(v)

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
    seed = seed_getter(stickiness)
    cumulative = tuple(itertools.accumulate(v.weight for v in variants))
    prefix = group_id + ":"
    return CompiledVariants(variants, group_id, results, total, seed, overrides, prefix, cumulative)


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
        target = mmh3.hash(cv.prefix + seed, VARIANT_SEED, False) % cv.total + 1
    return bisect.bisect_left(cv.cumulative, target)
