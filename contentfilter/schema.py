"""Build frozen, typed settings objects from plain YAML values, strictly.

Settings are frozen dataclasses. `build(cls, mapping, path)` walks their fields,
checks every value against the field's type, and refuses unknown keys, naming the
full key path (`scanners[1].servers[0]: ...`). A type may bring its own parser by
defining a classmethod `from_config(value) -> instance` (raise ValueError with a
reason). Range checks live in each dataclass's `__post_init__` (raise ValueError);
they come out as a ConfigError for that section's path.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from contentfilter.errors import ConfigError

T = TypeVar("T")


def build(cls: type[T], value: object, path: str = "") -> T:
    """Build an instance of the dataclass `cls` from a mapping, strictly."""
    return typing.cast(T, _convert(cls, value, path))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build_dataclass(cls: type[Any], value: object, path: str) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, "expected a mapping of keys", value)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in value if key not in fields]
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(_join(path, str(unknown[0])), f"unknown key (known keys: {known})")
    arguments = {}
    for name, spec in fields.items():
        if name in value:
            arguments[name] = _convert(hints[name], value[name], _join(path, name))
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(path, name), "required key is missing")
    try:
        return cls(**arguments)
    except ValueError as error:
        raise ConfigError(path, str(error)) from None


def _convert(kind: Any, value: object, path: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _convert_union(typing.get_args(kind), value, path)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(map(str, choices))}", value)
        return value
    if origin is tuple:
        return _convert_tuple(typing.get_args(kind), value, path)
    if origin in (dict, Mapping):
        return _convert_dict(typing.get_args(kind), value, path)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if hasattr(kind, "from_config"):
            return _custom(kind, value, path)
        return _build_dataclass(kind, value, path)
    if isinstance(kind, type) and hasattr(kind, "from_config"):
        return _custom(kind, value, path)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return _convert_enum(kind, value, path)
    return _convert_scalar(kind, value, path)


def _custom(kind: Any, value: object, path: str) -> Any:
    try:
        return kind.from_config(value)
    except ConfigError as error:
        raise ConfigError(
            _join(path, error.key) if error.key else path, error.reason, error.value
        ) from None
    except (ValueError, TypeError) as error:
        raise ConfigError(path, str(error), value) from None


def _convert_union(choices: tuple[Any, ...], value: object, path: str) -> Any:
    if value is None and type(None) in choices:
        return None
    real = [choice for choice in choices if choice is not type(None)]
    if len(real) == 1:
        return _convert(real[0], value, path)
    errors = []
    for choice in real:
        try:
            return _convert(choice, value, path)
        except ConfigError as error:
            errors.append(error)
    raise errors[0]


def _convert_tuple(arguments: tuple[Any, ...], value: object, path: str) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ConfigError(path, "expected a list", value)
    if len(arguments) == 2 and arguments[1] is Ellipsis:
        return tuple(_convert(arguments[0], item, f"{path}[{i}]") for i, item in enumerate(value))
    if len(arguments) != len(value):
        raise ConfigError(path, f"expected a list of {len(arguments)} items", value)
    return tuple(
        _convert(kind, item, f"{path}[{i}]")
        for i, (kind, item) in enumerate(zip(arguments, value, strict=True))
    )


def _convert_dict(arguments: tuple[Any, ...], value: object, path: str) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, "expected a mapping", value)
    key_kind, value_kind = arguments
    return {
        _convert(key_kind, key, path): _convert(value_kind, item, _join(path, str(key)))
        for key, item in value.items()
    }


def _convert_enum(kind: type[enum.Enum], value: object, path: str) -> enum.Enum:
    if isinstance(value, str):
        for member in kind:
            if isinstance(member.value, str) and member.value.lower() == value.lower().removeprefix(
                "d_"
            ):
                return member
    choices = ", ".join(str(member.value) for member in kind)
    raise ConfigError(path, f"must be one of {choices}", value)


def _convert_scalar(kind: Any, value: object, path: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, "expected true or false", value)
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(path, "expected a whole number", value)
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(path, "expected a number", value)
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, "expected a string", value)
    raise TypeError(f"schema cannot convert to {kind!r} at {path}")


def require_positive(settings: object, *names: str) -> None:
    """For `__post_init__`: ValueError naming the first of these fields that is not > 0."""
    for name in names:
        value = getattr(settings, name)
        if value <= 0:
            raise ValueError(f"{name} must be positive (got {value})")


def to_plain(value: object) -> object:
    """The effective settings as plain values (for `check-config` to print)."""
    if hasattr(value, "to_config"):
        return value.to_config()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(to_plain(key)): to_plain(item) for key, item in value.items()}
    return value
