"""nonstop.toml: schema, loading, and errors that name the key path."""

from nonstop.config.load import load_config, parse_config, to_wire
from nonstop.config.schema import NonstopConfig
from nonstop.config.validate import validate_env, validate_release_name

__all__ = [
    "NonstopConfig",
    "load_config",
    "parse_config",
    "to_wire",
    "validate_env",
    "validate_release_name",
]
