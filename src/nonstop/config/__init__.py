"""nonstop.toml: schema, loading, and errors that name the key path."""

from nonstop.config.load import load_config, parse_config, to_wire
from nonstop.config.schema import NonstopConfig

__all__ = ["NonstopConfig", "load_config", "parse_config", "to_wire"]
