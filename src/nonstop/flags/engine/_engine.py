"""`FlagEngine`: compiled flags and the three questions apps ask on every request."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from nonstop.flags.engine._base import (
    Context,
    Environment,
    FlagOff,
    Predicate,
    Problems,
    VariantFailure,
    always,
    never,
    quote,
)
from nonstop.flags.engine._compile import (
    CompiledStrategy,
    CompiledVariants,
    Strategy,
    all_of,
    any_of,
    compile_strategy_rule,
    compile_variants,
    pick_variant,
)
from nonstop.flags.engine._constraints import compile_constraint, conjunction
from nonstop.flags.engine._document import (
    Dependency,
    DocumentState,
    FeatureDef,
    SegmentDef,
    apply_events,
    read_full,
)
from nonstop.flags.engine._problems import FlagDocumentError, Problem

REASONS: Final = ("TARGETING_MATCH", "SPLIT", "DISABLED", "DEFAULT", "STATIC")
_EMPTY: Final[Mapping[str, Any]] = {}


def _disabled(feature_enabled: bool) -> dict[str, Any]:
    return {"name": "disabled", "enabled": False, "feature_enabled": feature_enabled}


class Resolution(NamedTuple):
    """One evaluation: the decision, why, and the variant (Unleash's variant shape)."""

    enabled: bool
    reason: str
    variant: dict[str, Any]
    found: bool


@dataclass(frozen=True)
class CompiledFlag:
    definition: FeatureDef
    switch: bool  # the flag's own on/off, False when it cannot be compiled
    rule: Predicate  # any strategy matches (constraints included)
    strategies: tuple[CompiledStrategy, ...]
    variants: CompiledVariants | None
    problems: tuple[Problem, ...]

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def dependencies(self) -> tuple[Dependency, ...]:
        return self.definition.dependencies


def compile_flag(
    feature: FeatureDef,
    segments: Mapping[int, SegmentDef],
    env: Environment,
    rule_group: str | None = None,
) -> CompiledFlag:
    """`rule_group`: the default rollout group id, when not the flag's own name (the
    reference engine evaluates a parent flag with its child's name as the default)."""
    problems = Problems()
    compiled: list[CompiledStrategy] = []
    off = False  # keep compiling after a part that turns the flag off, to report every problem
    for i, s in enumerate(feature.strategies):
        path = f"{feature.path}: strategies[{i}]"
        try:
            compiled.append(
                _compile_strategy(s, path, feature.name, segments, problems, env, rule_group)
            )
        except FlagOff:
            off = True
    strategies = tuple(compiled)
    rule = any_of([s.predicate for s in strategies]) if strategies else always
    switch = feature.enabled
    if off:
        strategies, rule, switch = (), never, False
    stickiness = feature.variants[0].stickiness if feature.variants else None
    variants = compile_variants(
        feature.variants, feature.name, stickiness, f"{feature.path}: variants", problems
    )
    return CompiledFlag(feature, switch, rule, strategies, variants, tuple(problems.items))


def _compile_strategy(
    s: Strategy,
    path: str,
    flag_name: str,
    segments: Mapping[int, SegmentDef],
    problems: Problems,
    env: Environment,
    rule_group: str | None = None,
) -> CompiledStrategy:
    missing = [seg for seg in s.segments if seg not in segments]
    cv: CompiledVariants | None = None
    if s.variants:
        group = s.parameters.get("groupId", flag_name)
        stickiness = s.parameters.get("stickiness", "default")
        cv = compile_variants(
            s.variants, group, stickiness, f"{path}.variants", problems, use_overrides=False
        )
    has_key = s.variants is not None
    if missing:
        problems.add(
            f"{path}.segments",
            f"unknown segment {', '.join(map(str, missing))} (the flag is always off)",
        )
        raise FlagOff
    off = False
    try:
        group_default = flag_name if rule_group is None else rule_group
        base, reason = compile_strategy_rule(s, group_default, path, problems, env)
    except FlagOff:
        base, reason, off = never, "DEFAULT", True
    sources = [(f"{path}.constraints[{i}]", c) for i, c in enumerate(s.constraints)]
    for seg_id in s.segments:
        segment = segments[seg_id]
        sources += [
            (f"{segment.path}: constraints[{i}]", c) for i, c in enumerate(segment.constraints)
        ]
    constraints = []
    for where, constraint in sources:
        try:
            constraints.append(compile_constraint(constraint, where, problems, env))
        except FlagOff:
            off = True
    if off:
        raise FlagOff
    if constraints and reason == "STATIC":
        reason = "TARGETING_MATCH"
    return CompiledStrategy(conjunction(constraints, base, env), reason, cv, has_key)


class FlagEngine:
    """Evaluates Unleash feature flags exactly like Unleash's SDKs. See `nonstop.flags.engine`."""

    def __init__(
        self,
        state: DocumentState,
        flags: dict[str, CompiledFlag],
        env: Environment,
        document_problems: tuple[Problem, ...] = (),
    ) -> None:
        self._state = state
        self._flags = flags
        self._env = env
        self._rng = env.rng
        self._document_problems = document_problems
        self._deps: dict[str, Predicate] = {
            name: self._dependencies_predicate(flag)
            for name, flag in flags.items()
            if flag.switch and flag.dependencies
        }
        self._checks: dict[str, Predicate] = {
            name: self._check_for(flag) for name, flag in flags.items()
        }
        self._dependency_problems = tuple(self._dependency_issues())

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_unleash(
        cls,
        document: Mapping[str, Any],
        *,
        strict: bool = True,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        hostname: str | None = None,
    ) -> FlagEngine:
        """Compile a client features document (``GET /api/client/features``) or a delta
        document (``{"events": [...]}``). Strict: raise `FlagDocumentError` listing every
        problem. Lenient: evaluate like the Unleash SDK would and keep them in `problems`."""
        env = Environment(rng if rng is not None else random.Random(), clock, hostname)
        problems = Problems()
        state = read_full(document, problems)
        flags = {name: compile_flag(f, state.segments, env) for name, f in state.features.items()}
        engine = cls(state, flags, env, tuple(problems.items))
        if strict and engine.problems:
            raise FlagDocumentError(list(engine.problems))
        return engine

    def apply_delta(self, document: Mapping[str, Any], *, strict: bool = True) -> FlagEngine:
        """A new engine with delta-API events (``{"events": [...]}``) applied; self is untouched.

        Flags the events do not touch keep their compiled form."""
        problems = Problems()
        state = DocumentState(dict(self._state.features), dict(self._state.segments))
        touched = apply_events(
            state, document.get("events") if isinstance(document, Mapping) else None, problems
        )
        flags = {
            name: (
                self._flags[name]
                if name not in touched and name in self._flags
                else compile_flag(f, state.segments, self._env)
            )
            for name, f in state.features.items()
        }
        engine = FlagEngine(state, flags, self._env, tuple(problems.items))
        if strict and engine.problems:
            raise FlagDocumentError(list(engine.problems))
        return engine

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Everything that would make an import refuse this document, in document order."""
        seen: dict[Problem, None] = dict.fromkeys(self._document_problems)
        for flag in self._flags.values():
            seen.update(dict.fromkeys(flag.problems))
        seen.update(dict.fromkeys(self._dependency_problems))
        return tuple(seen)

    def _dependency_issues(self) -> Iterator[Problem]:
        for flag in self._flags.values():
            for i, dep in enumerate(flag.dependencies):
                parent = self._flags.get(dep.feature)
                path = f"{flag.definition.path}: dependencies[{i}].feature"
                if parent is None:
                    yield Problem(
                        path, f"unknown feature {quote(dep.feature)} (the flag is never enabled)"
                    )
                elif parent.dependencies:
                    yield Problem(
                        path,
                        f"{quote(dep.feature)} has dependencies of its own"
                        " (the flag is never enabled)",
                    )

    def _check_for(self, flag: CompiledFlag) -> Predicate:
        if not flag.switch:
            return never
        if not flag.dependencies:
            return flag.rule
        deps_ok = self._deps[flag.name]
        rule = flag.rule
        return lambda ctx: deps_ok(ctx) and rule(ctx)

    def _dependencies_predicate(self, flag: CompiledFlag) -> Predicate:
        flags = self._flags
        checks: list[Predicate] = []
        for dep in flag.dependencies:
            parent = flags.get(dep.feature)
            if parent is None or parent.dependencies:
                return never
            checks.append(self._dependency_check(parent, dep, flag.name))
        return all_of(checks, always)

    def _dependency_check(self, parent: CompiledFlag, dep: Dependency, child: str) -> Predicate:
        expected, wanted = dep.enabled, dep.variants
        rule = parent.rule if parent.switch else never
        if parent.switch and any(
            s.name == "flexibleRollout" and "groupId" not in s.parameters
            for s in parent.definition.strategies
        ):
            # The parent's rollouts without a groupId hash with the child's name.
            rule = compile_flag(parent.definition, self._state.segments, self._env, child).rule
        variant_of = self._variant_of

        has_variants = parent.variants is not None or any(
            s.has_variants_key for s in parent.strategies
        )

        def holds(ctx: Context) -> bool:
            if has_variants:  # computed even when not compared: weights of 0 fail the call
                chosen = variant_of(parent, ctx)
                if wanted and chosen is not None and chosen["name"] not in wanted:
                    return False
            return rule(ctx) is expected

        return holds

    # ---------------------------------------------------------------- questions

    def __contains__(self, name: object) -> bool:
        return name in self._flags

    def __len__(self) -> int:
        return len(self._flags)

    def names(self) -> list[str]:
        return list(self._flags)

    def is_enabled(
        self, name: str, context: Mapping[str, Any] | None = None, default: bool = False
    ) -> bool:
        """Is flag `name` on for `context`? An unknown flag, or a context that breaks the
        evaluation, gives `default`: this never raises."""
        try:
            check = self._checks.get(name)
            if check is None:
                return default
            return check(_EMPTY if context is None else context)
        except Exception:  # a malformed context (or name) never takes the caller down
            return default

    def get_variant(self, name: str, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Unleash's variant shape: ``{"name", "payload"?, "enabled", "feature_enabled"}``."""
        try:
            flag = self._flags.get(name)
            if flag is None or not flag.switch:
                return _disabled(False)
            ctx = _EMPTY if context is None else context
            if flag.dependencies and not self._deps[flag.name](ctx):
                return _disabled(False)
            cv = flag.variants
            for strategy in flag.strategies:  # the same pass as `_decide`, without the reason
                if strategy.predicate(ctx):
                    if strategy.variants is not None:
                        cv = strategy.variants
                    break
            else:
                if flag.strategies:
                    return _disabled(False)
            if cv is None:
                return _disabled(True)
            result = cv.results[pick_variant(cv, ctx, self._rng)].copy()
            payload = result.get("payload")
            if payload is not None:
                result["payload"] = payload.copy()
            return result
        except Exception:  # weights adding up to 0, or a malformed context: like the SDK
            return _disabled(False)

    def resolve(self, name: str, context: Mapping[str, Any] | None = None) -> Resolution:
        """Decision, reason (TARGETING_MATCH, SPLIT, DISABLED, DEFAULT, STATIC) and variant,
        from one evaluation."""
        try:
            flag = self._flags.get(name)
        except TypeError:  # an unhashable name
            flag = None
        if flag is None:
            return Resolution(False, "DEFAULT", _disabled(False), False)
        ctx = _EMPTY if context is None else context
        try:
            enabled, reason, cv = self._decide(flag, ctx)
        except Exception:
            return Resolution(False, "DEFAULT", _disabled(False), True)
        if not enabled:
            return Resolution(False, reason, _disabled(False), True)
        try:
            return Resolution(True, reason, self._variant_result(cv, ctx), True)
        except VariantFailure:  # the SDK fails the variant call but not the decision
            return Resolution(True, reason, _disabled(False), True)

    def _decide(
        self, flag: CompiledFlag, ctx: Context
    ) -> tuple[bool, str, CompiledVariants | None]:
        """On or off, why, and the variants to pick from (one pass over the strategies)."""
        if not flag.switch:
            return False, "DISABLED", None
        if flag.dependencies and not self._deps[flag.name](ctx):
            return False, "DEFAULT", None
        strategies = flag.strategies
        if not strategies:
            return True, "STATIC", flag.variants
        for strategy in strategies:
            if strategy.predicate(ctx):
                own = strategy.variants
                return True, strategy.reason, own if own is not None else flag.variants
        return False, "DEFAULT", None

    def _variant_of(self, flag: CompiledFlag, ctx: Context) -> dict[str, Any] | None:
        """The parent's variant, as the reference engine computes it for dependencies:
        from the first matching strategy's variants, else the flag's (on or off)."""
        cv = flag.variants
        for s in flag.strategies:
            if s.predicate(ctx):
                if s.variants is not None:
                    cv = s.variants
                break
        if cv is None:
            return None
        return cv.results[pick_variant(cv, ctx, self._rng)]

    def _variant_result(self, cv: CompiledVariants | None, ctx: Context) -> dict[str, Any]:
        if cv is None:
            return _disabled(True)
        result = cv.results[pick_variant(cv, ctx, self._rng)]
        copy = result.copy()
        payload = copy.get("payload")
        if payload is not None:
            copy["payload"] = payload.copy()
        return copy


def validate(document: Mapping[str, Any]) -> list[Problem]:
    """Every problem in `document`, without raising (empty list: the document is clean)."""
    return list(FlagEngine.from_unleash(document, strict=False).problems)
