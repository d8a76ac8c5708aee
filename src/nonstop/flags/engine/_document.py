"""Read an Unleash client features document (or delta events) into typed definitions.

Shape errors are collected as `Problem`s with a path, e.g.
``features[3] "checkout": strategies[0].parameters.rollout: expected a string, got 150``.
A feature with a shape error is left out of the result (the reference SDK would refuse
the whole document); everything else is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from nonstop.flags.engine._base import Problems, quote
from nonstop.flags.engine._compile import Strategy, VariantDef
from nonstop.flags.engine._constraints import Constraint


@dataclass(frozen=True)
class Dependency:
    feature: str
    enabled: bool
    variants: tuple[str, ...] | None


@dataclass(frozen=True)
class FeatureDef:
    name: str
    enabled: bool
    strategies: tuple[Strategy, ...]
    variants: tuple[VariantDef, ...]
    dependencies: tuple[Dependency, ...]
    path: str


@dataclass(frozen=True)
class SegmentDef:
    id: int
    constraints: tuple[Constraint, ...]
    path: str


class _Shape(Exception):
    pass


T = TypeVar("T")


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "an object"
    return "a list" if isinstance(value, list) else type(value).__name__


class Reader:
    def __init__(self, problems: Problems) -> None:
        self.problems = problems

    def fail(self, path: str, expected: str, value: object) -> _Shape:
        self.problems.add(path, f"expected {expected}, got {_describe(value)}")
        return _Shape()

    def obj(self, value: object, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, "an object", value)
        return value

    def items(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, "a list", value)
        return value

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, "a string", value)
        return value

    def opt_string(self, value: object, path: str) -> str | None:
        return None if value is None else self.string(value, path)

    def boolean(self, value: object, path: str, default: bool | None = None) -> bool:
        if value is None and default is not None:
            return default
        if not isinstance(value, bool):
            raise self.fail(path, "true or false", value)
        return value

    def integer(self, value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, "a whole number", value)
        return value

    def strings(self, value: object, path: str) -> tuple[str, ...]:
        return tuple(self.string(v, f"{path}[{i}]") for i, v in enumerate(self.items(value, path)))

    # ---------------------------------------------------------------- parts

    def constraint(self, raw: object, path: str) -> Constraint:
        c = self.obj(raw, path)
        return Constraint(
            context_name=self.string(c.get("contextName"), f"{path}.contextName"),
            operator=self.string(c.get("operator"), f"{path}.operator"),
            values=None if c.get("values") is None else self.strings(c["values"], f"{path}.values"),
            value=self.opt_string(c.get("value"), f"{path}.value"),
            inverted=self.boolean(c.get("inverted"), f"{path}.inverted", default=False),
            case_insensitive=self.boolean(
                c.get("caseInsensitive"), f"{path}.caseInsensitive", default=False
            ),
        )

    def constraints(self, raw: object, path: str) -> tuple[Constraint, ...]:
        if raw is None:
            return ()
        return tuple(
            self.constraint(c, f"{path}[{i}]") for i, c in enumerate(self.items(raw, path))
        )

    def variant(self, raw: object, path: str) -> VariantDef:
        v = self.obj(raw, path)
        payload = v.get("payload")
        if payload is not None:
            p = self.obj(payload, f"{path}.payload")
            self.string(p.get("type"), f"{path}.payload.type")
            self.string(p.get("value"), f"{path}.payload.value")
        overrides = []
        for i, o in enumerate(self.items(v.get("overrides") or [], f"{path}.overrides")):
            o = self.obj(o, f"{path}.overrides[{i}]")
            name = self.string(o.get("contextName"), f"{path}.overrides[{i}].contextName")
            overrides.append(
                (name, frozenset(self.strings(o.get("values"), f"{path}.overrides[{i}].values")))
            )
        weight = self.integer(v.get("weight"), f"{path}.weight")
        if weight < 0:
            raise self.fail(f"{path}.weight", "a weight >= 0", weight)
        return VariantDef(
            name=self.string(v.get("name"), f"{path}.name"),
            weight=weight,
            stickiness=self.opt_string(v.get("stickiness"), f"{path}.stickiness"),
            payload=payload,
            overrides=tuple(overrides),
        )

    def variants(self, raw: object, path: str) -> tuple[VariantDef, ...]:
        return tuple(self.variant(v, f"{path}[{i}]") for i, v in enumerate(self.items(raw, path)))

    def strategy(self, raw: object, path: str) -> Strategy:
        s = self.obj(raw, path)
        params_raw = s.get("parameters") or {}
        params = self.obj(params_raw, f"{path}.parameters")
        for key, value in params.items():
            self.string(value, f"{path}.parameters.{key}")
        segments = s.get("segments")
        return Strategy(
            name=self.string(s.get("name"), f"{path}.name"),
            parameters=dict(params),
            constraints=self.constraints(s.get("constraints"), f"{path}.constraints"),
            segments=()
            if segments is None
            else tuple(
                self.integer(x, f"{path}.segments[{i}]")
                for i, x in enumerate(self.items(segments, f"{path}.segments"))
            ),
            variants=None
            if s.get("variants") is None
            else self.variants(s["variants"], f"{path}.variants"),
        )

    def dependency(self, raw: object, path: str) -> Dependency:
        d = self.obj(raw, path)
        variants = d.get("variants")
        return Dependency(
            feature=self.string(d.get("feature"), f"{path}.feature"),
            enabled=self.boolean(d.get("enabled"), f"{path}.enabled", default=True),
            variants=None if variants is None else self.strings(variants, f"{path}.variants"),
        )

    def feature(self, raw: object, index: int | None) -> FeatureDef | None:
        where = "features" if index is None else f"features[{index}]"
        try:
            f = self.obj(raw, where)
            name = self.string(f.get("name"), f"{where}.name")
        except _Shape:
            return None
        path = f"{where} {quote(name)}"
        failed = False

        def part(parse: Callable[[], T], default: T) -> T:
            nonlocal failed
            try:
                return parse()
            except _Shape:
                failed = True
                return default

        enabled = part(lambda: self.boolean(f.get("enabled"), f"{path}: enabled"), False)
        no_items: list[Any] = []
        raw_strategies = part(
            lambda: self.items(f.get("strategies") or [], f"{path}: strategies"), no_items
        )
        strategies: list[Strategy | None] = [
            part(lambda i=i, s=s: self.strategy(s, f"{path}: strategies[{i}]"), None)  # type: ignore[misc]
            for i, s in enumerate(raw_strategies)
        ]
        no_variants: tuple[VariantDef, ...] = ()
        variants = part(
            lambda: self.variants(f.get("variants") or [], f"{path}: variants"), no_variants
        )
        raw_deps = part(
            lambda: self.items(f.get("dependencies") or [], f"{path}: dependencies"), no_items
        )
        dependencies: list[Dependency | None] = [
            part(lambda i=i, d=d: self.dependency(d, f"{path}: dependencies[{i}]"), None)  # type: ignore[misc]
            for i, d in enumerate(raw_deps)
        ]
        if failed:
            return None
        return FeatureDef(
            name=name,
            enabled=enabled,
            strategies=tuple(s for s in strategies if s is not None),
            variants=variants,
            dependencies=tuple(d for d in dependencies if d is not None),
            path=path,
        )

    def segment(self, raw: object, path: str) -> SegmentDef | None:
        try:
            s = self.obj(raw, path)
            seg_id = self.integer(s.get("id"), f"{path}.id")
            where = f"{path} (id {seg_id})"
            return SegmentDef(
                seg_id, self.constraints(s.get("constraints"), f"{where}: constraints"), where
            )
        except _Shape:
            return None


@dataclass
class DocumentState:
    """Features and segments by name/id, in document order."""

    features: dict[str, FeatureDef]
    segments: dict[int, SegmentDef]


def read_full(doc: object, problems: Problems) -> DocumentState:
    reader = Reader(problems)
    state = DocumentState({}, {})
    try:
        body = reader.obj(doc, "document")
    except _Shape:
        return state
    if "events" in body and "features" not in body:
        apply_events(state, body["events"], problems)
        return state
    read_features_and_segments(reader, state, body.get("features"), body.get("segments"), "")
    return state


def read_features_and_segments(
    reader: Reader, state: DocumentState, features: object, segments: object, prefix: str
) -> None:
    try:
        feature_list = reader.items(features, f"{prefix}features")
    except _Shape:
        feature_list = []
    for i, raw in enumerate(feature_list):
        feature = reader.feature(raw, i)
        if feature is None:
            continue
        if feature.name in state.features:
            reader.problems.add(feature.path, "duplicate feature name (the last one wins)")
        state.features[feature.name] = feature
    if segments is None:
        return
    try:
        segment_list = reader.items(segments, f"{prefix}segments")
    except _Shape:
        return
    for i, raw in enumerate(segment_list):
        segment = reader.segment(raw, f"{prefix}segments[{i}]")
        if segment is not None:
            state.segments[segment.id] = segment


def apply_events(state: DocumentState, events: object, problems: Problems) -> set[str]:
    """Apply delta-API events in order; returns the names of the features they may change."""
    reader = Reader(problems)
    touched: set[str] = set()
    try:
        event_list = reader.items(events, "events")
    except _Shape:
        return touched
    for i, raw in enumerate(event_list):
        path = f"events[{i}]"
        try:
            event = reader.obj(raw, path)
            kind = reader.string(event.get("type"), f"{path}.type")
        except _Shape:
            continue
        if kind == "hydration":
            touched |= set(state.features)
            state.features.clear()
            state.segments.clear()
            read_features_and_segments(
                reader, state, event.get("features"), event.get("segments") or [], f"{path}."
            )
            touched |= set(state.features)
        elif kind == "feature-updated":
            feature = reader.feature(event.get("feature"), None)
            if feature is not None:
                state.features[feature.name] = feature
                touched.add(feature.name)
        elif kind == "feature-removed":
            name = event.get("featureName")
            if isinstance(name, str):
                state.features.pop(name, None)
                touched.add(name)
            else:
                reader.fail(f"{path}.featureName", "a string", name)
        elif kind == "segment-updated":
            segment = reader.segment(event.get("segment"), f"{path}.segment")
            if segment is not None:
                state.segments[segment.id] = segment
                touched |= {f.name for f in state.features.values() if _uses(f, segment.id)}
        elif kind == "segment-removed":
            seg_id = event.get("segmentId")
            if isinstance(seg_id, int) and not isinstance(seg_id, bool):
                state.segments.pop(seg_id, None)
                touched |= {f.name for f in state.features.values() if _uses(f, seg_id)}
            else:
                reader.fail(f"{path}.segmentId", "a whole number", seg_id)
        else:
            problems.add(f"{path}.type", f"unknown event type {quote(kind)} (ignored)")
    return touched


def _uses(feature: FeatureDef, segment_id: int) -> bool:
    return any(segment_id in s.segments for s in feature.strategies)
