"""Text to typed option values, in one place: YAML without aliases, and values coerced to a
field's type annotation (``typing.get_type_hints``). Used by ``TrainConfig`` for profiles, YAML
files and ``--set KEY=VALUE`` alike; every failure is a :class:`~dldl.errors.ConfigError` naming
the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import yaml

from dldl.errors import ConfigError, DldlError, first_line


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*a``): a 600-byte "billion laughs" document
    cannot expand into gigabytes."""

    def compose_node(self, parent, index):  # noqa: ANN001
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"YAML aliases are not allowed (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def load_yaml(text: str, source: str = "<text>") -> Any:
    """Parse YAML text safely (no tags beyond the safe ones, no aliases).

    >>> load_yaml("a: [1, 2]")
    {'a': [1, 2]}
    >>> load_yaml("a: &x [1]\\nb: *x", "c.yaml")
    Traceback (most recent call last):
    dldl.errors.DldlError: c.yaml: not valid YAML (YAML aliases are not allowed (line 2))
    """
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise DldlError(f"{source}: not valid YAML ({first_line(e)})") from None


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` (often text from a command line or YAML) as the type ``hint`` says.

    Handles ``int``, ``float``, ``bool``, ``str``, ``X | None`` (``null``/``none`` is ``None``),
    ``list``/``dict`` (text is parsed as YAML) and dataclasses (built from a mapping).

    >>> coerce("lr", float, "5e-4"), coerce("limit", int | None, "null"), coerce("resume", bool, "yes")
    (0.0005, None, True)
    >>> coerce("batch_size", int, "4.5")
    Traceback (most recent call last):
    dldl.errors.ConfigError: batch_size '4.5': must be a whole number
    >>> coerce("hybrid_pool", bool, "maybe")
    Traceback (most recent call last):
    dldl.errors.ConfigError: hybrid_pool 'maybe': must be true or false
    """
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            return None
        (hint,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return value
    if origin is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(name, value, "true or false")
    if origin in (int, float):
        if isinstance(value, bool):
            raise ConfigError(name, value, "a number" if origin is float else "a whole number")
        if origin is int and isinstance(value, (int, str)):  # exact: a float holds whole numbers only up to 2**53
            try:
                return int(value)
            except ValueError:
                pass  # "1e3", "4.5": through float below
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(name, value, "a number" if origin is float else "a whole number") from None
        if origin is int:
            if not number.is_integer():
                raise ConfigError(name, value, "a whole number")
            return int(number)
        return number
    if origin is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(name, value, "text")
    if origin in (list, dict):
        if isinstance(value, str):
            value = load_yaml(value, f"--set {name}")
        if not isinstance(value, origin):
            raise ConfigError(name, value, "a list" if origin is list else "a mapping")
        return value
    if dataclasses.is_dataclass(origin):
        if isinstance(value, str):
            value = load_yaml(value, f"--set {name}")
        if isinstance(value, origin):
            return value
        if not isinstance(value, dict):
            raise ConfigError(name, value, f"a mapping of {origin.__name__} fields")
        known = {f.name for f in dataclasses.fields(origin)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(name, unknown, f"{origin.__name__} fields ({', '.join(sorted(known))})")
        try:
            return origin(**value)
        except (TypeError, ValueError) as e:
            raise ConfigError(name, value, f"valid {origin.__name__} fields ({e})") from None
    return value
