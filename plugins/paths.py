"""Dot paths into nested data (`customer.address.city`, `items.0.sku`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MISSING = None


def lookup(data: Any, path: str) -> Any:
    """The value at `path` in nested mappings and lists, or None when any segment is missing."""
    value = data
    for part in path.split(".") if path else ():
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and part.lstrip("-").isdigit():
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value
