"""Unleash-compatible feature flag evaluation, pure and fast.

Decisions are identical to Unleash's official SDKs (its reference engine, yggdrasil):
the same MurmurHash3 buckets for gradual rollouts and variants, the same stickiness,
constraint operators, segments, strategy variants and dependent features. The whole
Unleash client specification passes (tests/flags_engine).

Public API::

    engine = FlagEngine.from_unleash(doc)   # GET /api/client/features body, or {"events": [...]}
    engine.is_enabled("checkout", ctx)      -> bool (an unknown flag gives default=False)
    engine.get_variant("checkout", ctx)     -> {"name", "payload"?, "enabled", "feature_enabled"}
    engine.resolve("checkout", ctx)         -> Resolution(enabled, reason, variant, found)
    engine.apply_delta({"events": [...]})   -> a new FlagEngine (this one is untouched)
    engine.problems                         -> tuple[Problem, ...]
    validate(doc)                           -> list[Problem]

A context is Unleash's: ``userId, sessionId, remoteAddress, environment, appName,
currentTime`` and ``properties`` (a dict of strings). A standard field missing at the top
level is also looked up in ``properties``, as the reference engine does.

Bad documents: `from_unleash` (strict, the default) raises `FlagDocumentError`, a
`nonstop.errors.UsageError`, listing every problem with its path, e.g.
``features[3] "checkout": strategies[0].parameters: expected a percentage 0..100, got 150``.
``strict=False`` compiles the document the way the SDK would (a flag that cannot be
compiled is off, an unknown operator never matches) and keeps the list in `problems`.

Purity: the engine does no I/O and reads no clock. Pass ``clock`` (a callable returning
epoch seconds) for DATE constraints when the context has no ``currentTime``; ``rng`` for
the random stickiness and ``gradualRolloutRandom``; ``hostname`` for the
``applicationHostname`` strategy.

Reasons from `resolve` (OpenFeature's names): STATIC (on for everyone: no strategies, or an
unconstrained default / 100% strategy), TARGETING_MATCH (constraints, segments, user ids or
IPs matched), SPLIT (a partial rollout bucket matched), DISABLED (the flag is switched off,
or cannot be compiled), DEFAULT (unknown flag, or no strategy matched).
"""

from nonstop.flags.engine._engine import REASONS, FlagEngine, Resolution, validate
from nonstop.flags.engine._problems import FlagDocumentError, Problem

__all__ = ["REASONS", "FlagDocumentError", "FlagEngine", "Problem", "Resolution", "validate"]
