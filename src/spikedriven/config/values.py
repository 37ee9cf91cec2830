"""Reading a setting's value as its field's type: YAML's and the command line's words (true, none, 1e-3, a list)
into the typed value, or one sentence naming the key."""

from __future__ import annotations

import math
import typing
from typing import Any, Mapping, Sequence

import yaml

from ..errors import ConfigError
from .schema import FIELDS, Config


_HINTS = typing.get_type_hints(Config)


def _base_type(name: str):
    hint = _HINTS[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    return hint, optional


TRUE_WORDS = {"true", "yes", "on", "1"}
FALSE_WORDS = {"false", "no", "off", "0"}
NONE_WORDS = {"none", "null", ""}  # what an optional field reads as None


def coerce(name: str, value: Any, source: str) -> Any:
    """Convert ``value`` to the type of field ``name`` or raise one clear sentence."""
    base, optional = _base_type(name)
    where = f"{name} (from {source})"
    takes_auto = FIELDS[name].metadata.get("auto", False)
    word = _word(value)
    if value is None or (optional and word in NONE_WORDS):
        if optional:
            return None
        raise ConfigError(f"{where} needs a value of type {base.__name__}, got nothing")
    if takes_auto and word == "auto":
        return None  # None is how such a field says auto
    convert = _to_names if typing.get_origin(base) is list else _CONVERTERS.get(base)
    if convert is None:
        raise AssertionError(f"unhandled config type for {name}")
    return convert(value, where, takes_auto)


def _word(value: Any) -> Any:
    """A string as the word it spells (trimmed, lower case); None for anything else."""
    return value.strip().lower() if isinstance(value, str) else None


def _words(text: str) -> list[str]:
    """A list given as one string: words separated by commas and/or spaces."""
    return text.replace(",", " ").split()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Each converter takes (value, where, takes_auto): the value (neither None nor a none or auto word), the key and
# its source for the error, and whether the field takes auto (which its error then names).

def _to_bool(value: Any, where: str, takes_auto: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if _word(value) in TRUE_WORDS | FALSE_WORDS:
        return _word(value) in TRUE_WORDS
    raise ConfigError(f"{where} must be {'true, false or auto' if takes_auto else 'true or false'}, got {value!r}")


def _to_int(value: Any, where: str, takes_auto: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    or_auto = " or auto" if takes_auto else ""
    raise ConfigError(f"{where} must be an integer{or_auto}, got {value!r}")


def _to_float(value: Any, where: str, takes_auto: bool) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    try:
        number = float(value)  # also takes YAML's "3e-4", which PyYAML reads as a string
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return number


def _to_str(value: Any, where: str, takes_auto: bool) -> str:
    if isinstance(value, str) or _is_number(value):
        return str(value)
    raise ConfigError(f"{where} must be a string, got {value!r}")


def _to_names(value: Any, where: str, takes_auto: bool) -> list[str]:
    """list[str]: names, as a list or one string of them."""
    if isinstance(value, str):
        value = _words(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of names, got {value!r}")
    return list(value)


def _to_numbers(value: Any, where: str, takes_auto: bool) -> list[float]:
    """list: finite numbers, as a list, one string of them or a single number."""
    if isinstance(value, str):
        value = _words(value)
    if _is_number(value):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} must be a list of numbers, got {value!r}")
    try:
        out = [float(v) for v in value if not isinstance(v, bool)]
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a list of numbers, got {value!r}") from None
    if len(out) != len(value) or not all(math.isfinite(v) for v in out):  # a boolean among them: fewer out
        raise ConfigError(f"{where} must be a list of finite numbers, got {value!r}")
    return out


def _to_settings(value: Any, where: str, takes_auto: bool) -> dict:
    return _settings_mapping(value, where)


# A field's type -> its converter; list[str] (names) is told apart by its origin, in coerce.
_CONVERTERS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, dict: _to_settings, list: _to_numbers}


def parse_key_values(items: Sequence[str], where: str) -> dict:
    """``key=value`` words, each value read as a YAML scalar (``0.5``, ``true``, ``[1, 1]``, ``hard``)."""
    pairs = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where} takes key=value, got {item!r}")
        try:
            pairs[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{where} {item!r}: the value is not a valid YAML scalar") from None
    return pairs


def _settings_mapping(value: Any, where: str) -> dict:
    """A mapping of setting names to values: YAML's own, or ``key=value`` words from flags (``levels=8``)."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if isinstance(value, (list, tuple)):
        value = parse_key_values(value, where)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k.isidentifier() for k in value):
        raise ConfigError(f"{where} must map setting names to values, got {value!r}")
    return dict(value)
