"""nonstop.flags: feature flags (evaluation engine, store, SDK, OpenFeature provider).

``Client`` is the SDK an app uses; ``nonstop.flags.openfeature.NonstopProvider`` wraps it
for OpenFeature (needs the ``openfeature`` extra).
"""

from nonstop.flags.client import Client
from nonstop.flags.engine import FlagDocumentError, FlagEngine

__all__ = ["Client", "FlagDocumentError", "FlagEngine"]
