"""`step.transform`: extract, map, filter and convert, applied in that order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from server import StepContext, ValidationError

from .paths import lookup

OPERATIONS = ("extract", "map", "filter", "convert")
TYPES = ("int", "float", "str", "bool")
_TRUE = frozenset({"true", "yes", "1", "on", "y"})
_FALSE = frozenset({"false", "no", "0", "off", "n", ""})


def prepare_transform(config: Mapping[str, Any]) -> None:
    """Check the shape of each operation at config load.

    - ``extract: {target: dot.path}`` copies values out of the data.
    - ``map: {from: list.path, to: target, fields: {new: item.path}}`` reshapes each item of a list.
    - ``filter: {from: list.path, to: target, where: {item.path: value}}`` keeps the matching items.
    - ``convert: {field: int|float|str|bool}`` converts top-level fields (after the operations above).
    """
    if not any(op in config for op in OPERATIONS):
        raise ValueError(f"step.transform needs at least one of {', '.join(OPERATIONS)}")
    for key in ("extract", "convert"):
        if key in config and not isinstance(config[key], dict):
            raise ValueError(f"{key} must be a mapping")
    for name, value in (config.get("convert") or {}).items():
        if value not in TYPES:
            raise ValueError(f"convert.{name}: {value!r} is not one of {', '.join(TYPES)}")
    for key, rule in (("map", "fields"), ("filter", "where")):
        spec = config.get(key)
        if spec is None:
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("from"), str) or not isinstance(spec.get(rule), dict):
            raise ValueError(f"{key} needs 'from' (a list path) and '{rule}' (a mapping)")


async def transform(ctx: StepContext) -> dict[str, Any]:
    """Apply the configured operations and output the fields they produce."""
    config, data, out = ctx.config, ctx.data, {}
    for target, path in (config.get("extract") or {}).items():
        out[target] = lookup(ctx.data, str(path))
    if "map" in config:
        spec = config["map"]
        out[spec.get("to", spec["from"])] = [
            {new: lookup(item, str(path)) for new, path in spec["fields"].items()}
            for item in _items(data, out, spec["from"])
        ]
    if "filter" in config:
        spec = config["filter"]
        out[spec.get("to", spec["from"])] = [
            item
            for item in _items(data, out, spec["from"])
            if all(lookup(item, str(path)) == want for path, want in spec["where"].items())
        ]
    for field, kind in (config.get("convert") or {}).items():
        out[field] = _convert(field, out[field] if field in out else data.get(field), kind)
    return out


def _items(data: Mapping[str, Any], out: Mapping[str, Any], path: str) -> list[Any]:
    # The step's own output shadows the data, so `map` can read what `extract` produced.
    head, _, rest = path.partition(".")
    value = out[head] if head in out else data.get(head)
    value = lookup(value, rest) if rest else value
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(f"{path} is not a list", field=path)
    return value


def _convert(field: str, value: Any, kind: str) -> Any:
    if value is None:
        return None
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise ValueError(value)
        if kind == "int" and isinstance(value, str) and "." in value:
            return int(float(value))
        return {"int": int, "float": float, "str": str}[kind](value)
    except (TypeError, ValueError, OverflowError):  # int(inf) overflows: still bad input, not a crash
        shown = json.dumps(value, default=str)  # as the client sent it, cut short: a whole body must not echo back
        shown = shown if len(shown) <= 64 else shown[:63] + "…"
        raise ValidationError(f"{field}: cannot convert {shown} to {kind}", field=field) from None
