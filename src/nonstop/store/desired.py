"""What should run and serve, as one typed record: the engine's desired state.

One row of the store holds it (``kv`` key ``desired_state``, JSON), read by
:meth:`Store.desired_state` and written by :meth:`Store.save_desired_state` only. State dirs
from before it kept the same facts under five separate keys; :func:`fold_legacy` turns those
into this record when the store opens, so an upgraded agent carries on where an older one
stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LEGACY_KEYS = ("active_release", "previous_release", "desired", "weights", "retire")


@dataclass(slots=True)
class DesiredState:
    active_release: str | None = None
    """The release that serves all traffic when no rollout runs (None before the first)."""
    previous_release: str | None = None
    """The rollback target, kept warm for ``keep_previous``."""
    replicas: dict[str, int] = field(default_factory=dict)
    """Web instances wanted per release; a release absent here has none."""
    weights: dict[str, int] | None = None
    """The routing weights per release (percent); None: all to the active release."""
    retire: dict[str, float] = field(default_factory=dict)
    """When each kept-warm release is scaled to zero (epoch seconds)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "active_release": self.active_release,
            "previous_release": self.previous_release,
            "replicas": dict(self.replicas),
            "weights": dict(self.weights) if self.weights is not None else None,
            "retire": dict(self.retire),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DesiredState:
        weights = data.get("weights")
        return cls(
            active_release=_name(data.get("active_release")),
            previous_release=_name(data.get("previous_release")),
            replicas={str(k): int(v) for k, v in dict(data.get("replicas") or {}).items()},
            weights={str(k): int(v) for k, v in dict(weights).items()}
            if weights is not None
            else None,
            retire={str(k): float(v) for k, v in dict(data.get("retire") or {}).items()},
        )


def _name(value: Any) -> str | None:
    return str(value) if value else None


def fold_legacy(values: Mapping[str, Any]) -> DesiredState:
    """The record from an older state dir's separate keys (``desired`` was the replicas)."""
    return DesiredState.from_dict({**values, "replicas": values.get("desired")})
