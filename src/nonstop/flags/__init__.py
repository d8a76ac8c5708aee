"""nonstop.flags: feature flags (evaluation engine, store, SDK, OpenFeature provider)."""

from nonstop.flags.engine import FlagDocumentError, FlagEngine

__all__ = ["FlagDocumentError", "FlagEngine"]
