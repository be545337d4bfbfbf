"""KEY=VALUE overrides of dataclass configs: the one parser behind ``affectsr train KEY=VALUE`` and
``model_args="prior=pooled;fusion=concat"``.

Each value is converted to the type of the field's current value: ``true/false`` (also ``1/0``,
``yes/no``, ``on/off``) for booleans, comma lists for tuples (``betas=0.9,0.99``), int, float or str.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["apply_overrides", "coerce", "parse_overrides"]

T = TypeVar("T")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def coerce(value: str, default: Any, name: str) -> Any:
    """``value`` as the type of ``default``; a one-line ValueError naming ``name`` when it does not parse."""
    if isinstance(default, bool):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"{name}: expected true/false, got {value!r}")
    try:
        if isinstance(default, tuple):
            items = [v for v in value.split(",") if v != ""]
            if default and not isinstance(default[0], str):
                return tuple(type(default[0])(v) for v in items)
            return tuple(items)
        if isinstance(default, (int, float)):
            return type(default)(value)
    except ValueError:
        raise ValueError(f"{name}: expected {type(default).__name__} values, got {value!r}") from None
    return value


def parse_overrides(fields: Mapping[str, Any], items: Iterable[str], what: str = "config") -> dict[str, Any]:
    """``["steps=7", "betas=0.8,0.9"]`` -> ``{"steps": 7, "betas": (0.8, 0.9)}``, typed like ``fields`` (name -> value).

    Dashes in keys count as underscores. Unknown keys and items without ``=`` are a ValueError.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"bad {what} override {item!r}: expected KEY=VALUE")
        if key not in fields:
            raise ValueError(f"bad {what} override {item!r}: unknown key {key!r}; known: {', '.join(fields)}")
        out[key] = coerce(value.strip(), fields[key], f"{what} override {key}")
    return out


def apply_overrides(config: T, items: Iterable[str], what: str = "config") -> T:
    """A copy of the dataclass ``config`` with the KEY=VALUE ``items`` applied."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    return dataclasses.replace(config, **parse_overrides(fields, items, what))  # type: ignore[type-var]
