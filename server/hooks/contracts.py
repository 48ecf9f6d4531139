"""Step contracts: declared inputs (checked, defaults applied, before a step runs) and outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import RegistrationError, StepError, ValidationError
from ..jsonbody import kind

_MISSING = object()
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
    "any": (object,),
}


@dataclass(frozen=True, slots=True)
class Field:
    """One declared input or output."""

    name: str
    type: str = "any"
    required: bool = True
    default: Any = _MISSING
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        """The field as shown in listings."""
        out = {"name": self.name, "type": self.type, "required": self.required}
        if self.default is not _MISSING:
            out["default"] = self.default
        return out


def parse_fields(spec: Mapping[str, Any] | None, where: str) -> tuple[Field, ...]:
    """Read `{name: "type"}` or `{name: {type, required, default, description}}`; refuse a bad spec."""
    if spec is None:
        return ()
    if not isinstance(spec, Mapping):
        raise RegistrationError(f"{where}: must be a mapping of field names to types")
    fields = []
    for name, value in spec.items():
        options = {"type": value} if isinstance(value, str) else value
        if not isinstance(options, Mapping) or not set(options) <= {"type", "required", "default", "description"}:
            raise RegistrationError(f"{where}.{name}: use a type name or {{type, required, default, description}}")
        kind = options.get("type", "any")
        if kind not in TYPES:
            raise RegistrationError(f"{where}.{name}: type {kind!r} is not one of {', '.join(TYPES)}")
        default = options.get("default", _MISSING)
        # A default of the wrong type would only show up later, as a 400 blaming the caller.
        if default is not _MISSING and default is not None and not _is(default, kind):
            raise RegistrationError(f"{where}.{name}: default {default!r} is not {kind}")
        required = bool(options.get("required", default is _MISSING))
        fields.append(Field(str(name), kind, required, default, str(options.get("description", ""))))
    return tuple(fields)


def resolve_inputs(
    fields: tuple[Field, ...], config: Mapping[str, Any], data: Mapping[str, Any], step: str
) -> dict[str, Any]:
    """Each input from the step's config, else the pipeline data, else its default; 400 when it is wrong."""
    inputs = {}
    for field in fields:
        value = config.get(field.name, _MISSING)
        if value is _MISSING:
            value = data.get(field.name, _MISSING)
        if value is _MISSING or value is None:
            if field.default is not _MISSING:
                value = field.default
            elif field.required:
                raise ValidationError(f"step {step!r}: input {field.name!r} is required", field=field.name)
            else:
                continue
        if not _is(value, field.type):
            raise ValidationError(
                f"step {step!r}: input {field.name!r} must be of type {field.type}, not {kind(value)}",
                field=field.name,
            )
        inputs[field.name] = value
    return inputs


def check_outputs(fields: tuple[Field, ...], output: Mapping[str, Any] | None, step: str) -> None:
    """A step that breaks its declared outputs is a server error naming the field."""
    output = output or {}
    for field in fields:
        if field.name not in output:
            if field.required:
                raise StepError(f"step {step!r} did not output {field.name!r}", field=field.name)
        elif not _is(output[field.name], field.type):
            raise StepError(f"step {step!r} output {field.name!r} is not {field.type}", field=field.name)


def _is(value: Any, kind: str) -> bool:
    if kind in ("number", "integer") and isinstance(value, bool):
        return False
    return isinstance(value, TYPES[kind])
