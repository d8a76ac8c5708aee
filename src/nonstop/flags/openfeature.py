"""OpenFeature provider on top of the SDK `Client` (or a bare `FlagEngine`).

    from openfeature import api
    from nonstop.flags import Client
    from nonstop.flags.openfeature import NonstopProvider

    api.set_provider(NonstopProvider(Client(url, token, app_name="shop")))
    flags = api.get_client()
    flags.get_boolean_value("checkout-v2", False, EvaluationContext("user-42"))

Booleans are the flag's decision; strings, numbers and objects come from the payload of
the selected variant (``string``/``csv``, ``number``, ``json``). Reasons are the engine's
(TARGETING_MATCH, SPLIT, STATIC, DISABLED, DEFAULT) or ERROR with an error code:

| case                                         | value   | reason   | error code     |
| unknown flag                                 | default | ERROR    | FLAG_NOT_FOUND |
| flag off (switch or no strategy matched)     | default | DISABLED / DEFAULT | -    |
| on, no variant or no payload (non-boolean)   | default | DEFAULT  | -              |
| payload of another type                      | default | ERROR    | TYPE_MISMATCH  |
| number/json payload that does not parse      | default | ERROR    | PARSE_ERROR    |

Outcomes for guarded rollouts (`OutcomeHook`, decision 0380)::

    outcomes = OutcomeHook(sdk)
    api.add_hooks([outcomes])
    with outcomes.track() as scope:            # one unit of work: a request, a job
        if flags.get_boolean_value("checkout-v2", False, ctx):
            ...
        if response.status >= 500:
            scope.fail()                       # or let the block raise
    # each flag evaluated in the block gets one outcome: ok, or error

The hook's ``after`` stage adds each successful evaluation, with its answer, to the tracked
scope; ``error`` counts evaluations that failed (per flag, in ``evaluation_errors``: they
serve the default and say nothing about the flag's code path, so they are not outcomes).
Only the stages every openfeature-sdk since 0.7 has are used (``finally_after``'s signature
changed across versions and is not needed). Evaluations outside any ``track()`` are not
outcomes.

The OpenFeature targeting key is Unleash's ``userId``; attributes named like Unleash's
standard fields (sessionId, remoteAddress, environment, appName, currentTime) go to the
top level, every other attribute into ``properties`` as text.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import (
    FlagEvaluationDetails,
    FlagResolutionDetails,
    FlagValueType,
    Reason,
)
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import AbstractProvider
from openfeature.provider.metadata import Metadata

from nonstop.flags.client import Client
from nonstop.flags.engine import FlagEngine, Resolution

STANDARD_FIELDS = frozenset(
    {"userId", "sessionId", "remoteAddress", "environment", "appName", "currentTime"}
)
T = TypeVar("T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


class _Mismatch(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def unleash_context(context: EvaluationContext | None) -> dict[str, Any]:
    """OpenFeature's context as Unleash's: targeting key -> userId, the rest as above."""
    if context is None:
        return {}
    result: dict[str, Any] = {}
    properties: dict[str, str] = {}
    for key, value in (context.attributes or {}).items():
        if value is None:
            continue
        if key in STANDARD_FIELDS:
            result[key] = _text(value)
        else:
            properties[key] = _text(value)
    if context.targeting_key:
        result["userId"] = context.targeting_key
    if properties:
        result["properties"] = properties
    return result


def _string(payload: Mapping[str, Any]) -> str:
    if payload.get("type") not in ("string", "csv"):
        raise _Mismatch(ErrorCode.TYPE_MISMATCH, f"payload is {payload.get('type')}, not a string")
    return str(payload.get("value", ""))


def _number_text(payload: Mapping[str, Any]) -> str:
    if payload.get("type") != "number":
        raise _Mismatch(ErrorCode.TYPE_MISMATCH, f"payload is {payload.get('type')}, not a number")
    return str(payload.get("value", "")).strip()


def _integer(payload: Mapping[str, Any]) -> int:
    text = _number_text(payload)
    try:
        return int(text)
    except ValueError:
        raise _Mismatch(ErrorCode.PARSE_ERROR, f"payload {text!r} is not an integer") from None


def _float(payload: Mapping[str, Any]) -> float:
    text = _number_text(payload)
    try:
        return float(text)
    except ValueError:
        raise _Mismatch(ErrorCode.PARSE_ERROR, f"payload {text!r} is not a number") from None


def _object(payload: Mapping[str, Any]) -> ObjectValue:
    if payload.get("type") != "json":
        raise _Mismatch(ErrorCode.TYPE_MISMATCH, f"payload is {payload.get('type')}, not json")
    try:
        value = json.loads(str(payload.get("value", "")))
    except json.JSONDecodeError as exc:
        raise _Mismatch(ErrorCode.PARSE_ERROR, f"payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict | list):
        raise _Mismatch(ErrorCode.TYPE_MISMATCH, "payload JSON is not an object or a list")
    return value


class NonstopProvider(AbstractProvider):
    """Resolves OpenFeature flags with nonstop's engine, through the SDK `Client`."""

    def __init__(self, source: Client | FlagEngine) -> None:
        super().__init__()
        self.source = source

    def get_metadata(self) -> Metadata:
        return Metadata(name="nonstop")

    def shutdown(self) -> None:
        if isinstance(self.source, Client):
            self.source.close()

    def _resolve(self, key: str, context: EvaluationContext | None) -> Resolution:
        if isinstance(self.source, Client):
            ctx = {**self.source.context(None), **unleash_context(context)}
            resolution = self.source.engine.resolve(key, ctx)
            if resolution.found:
                variant = resolution.variant
                self.source.count(key, resolution.enabled, variant["name"])
            return resolution
        return self.source.resolve(key, unleash_context(context))

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        res = self._resolve(flag_key, evaluation_context)
        if not res.found:
            return _not_found(flag_key, default_value)
        variant = (
            res.variant["name"] if res.variant["enabled"] else ("on" if res.enabled else "off")
        )
        return FlagResolutionDetails(value=res.enabled, reason=res.reason, variant=variant)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._from_payload(flag_key, default_value, evaluation_context, _string)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._from_payload(flag_key, default_value, evaluation_context, _integer)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._from_payload(flag_key, default_value, evaluation_context, _float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        return self._from_payload(flag_key, default_value, evaluation_context, _object)

    def _from_payload(
        self,
        key: str,
        default: T,
        context: EvaluationContext | None,
        read: Callable[[Mapping[str, Any]], T],
    ) -> FlagResolutionDetails[T]:
        res = self._resolve(key, context)
        if not res.found:
            return _not_found(key, default)
        if not res.enabled:
            return FlagResolutionDetails(value=default, reason=res.reason)
        variant = res.variant
        payload = variant.get("payload")
        if not variant["enabled"] or payload is None:
            name = variant["name"] if variant["enabled"] else None
            return FlagResolutionDetails(value=default, reason=Reason.DEFAULT, variant=name)
        try:
            value = read(payload)
        except _Mismatch as exc:
            return FlagResolutionDetails(
                value=default,
                reason=Reason.ERROR,
                error_code=exc.code,
                error_message=f'flag "{key}", variant "{variant["name"]}": {exc}',
                variant=variant["name"],
            )
        return FlagResolutionDetails(value=value, reason=res.reason, variant=variant["name"])


def _not_found(key: str, default: T) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(
        value=default,
        reason=Reason.ERROR,
        error_code=ErrorCode.FLAG_NOT_FOUND,
        error_message=f'no flag "{key}"',
    )


class Scope:
    """One unit of work tracked by `OutcomeHook.track`: the flags evaluated in it, and
    whether it failed."""

    def __init__(self) -> None:
        self.exposures: dict[str, bool] = {}
        """Flag -> the answer it gave (the first one, if evaluated more than once)."""
        self.failed = False

    def fail(self) -> None:
        """Mark the work as failed without raising (a 5xx response, a rejected job)."""
        self.failed = True


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "nonstop_flags_scope", default=None
)


class OutcomeHook(Hook):
    """Records, per evaluated flag, how the work done under the evaluation ended, through
    the SDK's `Client.record_outcome` (sent with the metrics; see the module doc)."""

    def __init__(self, source: Client | NonstopProvider) -> None:
        client = source.source if isinstance(source, NonstopProvider) else source
        if not isinstance(client, Client):
            raise TypeError("OutcomeHook needs the SDK Client (or a provider built on one)")
        self.client = client
        self.evaluation_errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[FlagValueType],
        hints: HookHints,
    ) -> None:
        """A successful evaluation: inside a tracked scope, it is an exposure to its answer."""
        scope = _scope.get()
        if scope is not None and details.reason != Reason.ERROR:
            scope.exposures.setdefault(hook_context.flag_key, _enabled(details))

    def error(self, hook_context: HookContext, exception: Exception, hints: HookHints) -> None:
        """A failed evaluation (it served the default): counted per flag, not an outcome."""
        with self._lock:
            self.evaluation_errors[hook_context.flag_key] += 1

    @contextlib.contextmanager
    def track(self) -> Iterator[Scope]:
        """Track one unit of work: every flag evaluated inside gets one outcome at the end,
        an error when the block raises (the exception goes on) or calls ``scope.fail()``."""
        scope = Scope()
        token = _scope.set(scope)
        try:
            yield scope
        except Exception:
            scope.failed = True
            raise
        finally:
            _scope.reset(token)
            for flag, enabled in scope.exposures.items():
                self.client.record_outcome(flag, enabled, ok=not scope.failed)


def _enabled(details: FlagEvaluationDetails[FlagValueType]) -> bool:
    """Was the flag on for this user? A boolean flag's value; for the others, a variant
    was served (the provider names none when the flag is off)."""
    if isinstance(details.value, bool):
        return details.value
    return details.variant is not None
