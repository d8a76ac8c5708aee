"""Load nonstop.toml and turn validation failures into ``path: what was expected`` lines."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from nonstop.config.schema import NonstopConfig
from nonstop.errors import ConfigError, UsageError
from nonstop.files import read_regular_file

CONFIG_FILE = "nonstop.toml"
MAX_CONFIG_BYTES = 1024 * 1024


def load_config(path: str | Path = CONFIG_FILE) -> NonstopConfig:
    """Read and validate ``path``; raise :class:`ConfigError` naming every bad key."""
    file = Path(path)
    if not file.exists():
        raise ConfigError([("", f"{file} not found; run `nonstop init` to write an example")])
    try:  # a regular file of at most 1 MiB: a FIFO or a device is refused, not read for ever
        text = read_regular_file(file, MAX_CONFIG_BYTES, "config file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"not UTF-8 text (byte {exc.start})")], source=str(file)) from None
    except UsageError as exc:
        raise ConfigError([("", str(exc))]) from None
    return parse_config(text, source=str(file))


def parse_config(text: str, source: str = CONFIG_FILE) -> NonstopConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], source=source) from exc
    except RecursionError:
        raise ConfigError([("", "not valid TOML: nested too deep")], source=source) from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ConfigError([("", f"not valid TOML: {exc}")], source=source) from None
    return validate_config(data, source=source)


def validate_config(data: dict[str, Any], source: str = CONFIG_FILE) -> NonstopConfig:
    try:
        return NonstopConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc), source=source) from None


def resolve(value: str, where: str) -> str:
    """``$NAME`` -> the environment variable's value (a secret kept out of nonstop.toml);
    anything else as written."""
    if not value.startswith("$"):
        return value
    name = value[1:]
    found = os.environ.get(name)
    if not found:
        raise UsageError(f"{where}: the environment variable {name} is not set")
    return found


def to_wire(config: NonstopConfig) -> dict[str, Any]:
    """The config as the CLI sends it to the agent (and the store keeps it with a release):
    only what the file set, so defaults stay defaults on the other side and "was this table
    written?" (e.g. a canary preset's own watch when there is no [watch]) keeps its answer."""
    return config.model_dump(mode="json", exclude_unset=True)


def describe_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """One ``(path, message)`` per bad key, first message wins when a union tried several types."""
    seen: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        path = format_loc(error["loc"])
        message = _message(error)
        if error["type"] == "extra_forbidden":
            message += _suggestion(error["loc"])
        # A model validator may already name a sub-path ("steps[1].weight: ...").
        sub, sep, rest = message.partition(": ")
        if sep and re.fullmatch(r"[A-Za-z_][\w]*(\[\d+\])?(\.[A-Za-z_][\w]*(\[\d+\])?)*", sub):
            path, message = (f"{path}.{sub}" if path else sub), rest
        seen.setdefault(path, message)
    return list(seen.items())


def _suggestion(loc: tuple[int | str, ...]) -> str:
    """``(did you mean "weight"?)`` for a misspelt key, from the keys valid where it stands."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], _keys_at(loc[:-1]), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys of the table at ``loc`` in the schema (none when it is not a known table)."""
    model: Any = NonstopConfig
    for part in loc:
        if isinstance(part, int):
            continue  # an array's item: the same type as its annotation's argument
        field = model.model_fields.get(part) if _is_model(model) else None
        if field is None:
            return []
        model = _table_type(field.annotation)
    return list(model.model_fields) if _is_model(model) else []


def _table_type(annotation: Any) -> Any:
    """The model inside ``X | None``, ``list[X]`` or ``dict[str, X]`` annotations."""
    for arg in (annotation, *typing.get_args(annotation)):
        if _is_model(arg):
            return arg
        for inner in typing.get_args(arg):
            if _is_model(inner):
                return inner
    return None


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][\w-]*", part) and not _is_type_tag(part):
            out += f".{part}" if out else part
        # union member tags such as "function-before[...]" or "dict[str,any]" are not keys
    return out


def _is_type_tag(part: str) -> bool:
    return part in {"str", "int", "float", "bool", "dict", "list", "none", "literal"}


def _got(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _message(error: ErrorDetails) -> str:
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"expected one of {', '.join(options)}, got {_got(value)}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"expected an integer, got {_got(value)}"
    if kind in {"float_type", "float_parsing"}:
        return f"expected a number, got {_got(value)}"
    if kind in {"string_type"}:
        return f"expected a string, got {_got(value)}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"expected true or false, got {_got(value)}"
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return f"expected a table, got {_got(value)}"
    if kind == "list_type":
        return f"expected an array, got {_got(value)}"
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"expected a value {bounds[kind]} {limit}, got {_got(value)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"expected letters, digits, '.', '_' or '-', got {_got(value)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"][0].lower() + error["msg"][1:]
