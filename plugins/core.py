"""Core data steps: validate, set, log, transform and json_response."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jsonschema

from server import Register, Response, StepContext, StepResult, ValidationError, hookimpl

from .paths import lookup
from .transform import prepare_transform, transform

# --------------------------------------------------------------------------- step.validate


def prepare_validate(config: Mapping[str, Any]) -> Any:
    """Check the strategy and compile a JSON schema once, at config load."""
    strategy = config.get("strategy", "json_schema" if "schema" in config else "required_fields")
    if strategy == "required_fields":
        fields = config.get("required_fields", config.get("fields"))
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ValueError("required_fields must be a list of field names")
        return ("required_fields", tuple(fields))
    if strategy == "json_schema":
        schema = config.get("schema")
        if not isinstance(schema, dict):
            raise ValueError("json_schema validation needs a 'schema' mapping")
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from None
        return ("json_schema", cls(schema, format_checker=cls.FORMAT_CHECKER))
    raise ValueError("strategy must be 'required_fields' or 'json_schema'")


async def validate(ctx: StepContext) -> None:
    """Fail with 400 when the data lacks a required field or breaks the JSON schema."""
    strategy, rule = ctx.prepared
    if strategy == "required_fields":
        missing = [f for f in rule if lookup(ctx.data, f) in (None, "")]
        if missing:
            raise ValidationError(f"missing required field(s): {', '.join(missing)}", fields=missing)
        return None
    data = ctx.data if type(ctx.data) is dict else dict(ctx.data)  # jsonschema's "object" is a dict
    error = jsonschema.exceptions.best_match(rule.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise ValidationError(f"{where + ': ' if where else ''}{error.message}", field=where or None)
    return None


# --------------------------------------------------------------------------- set, log, respond


async def set_values(ctx: StepContext) -> dict[str, Any]:
    """Output the rendered `values` mapping."""
    values = ctx.config.get("values", {})
    return dict(values)


def prepare_set(config: Mapping[str, Any]) -> None:
    """`values` must be a mapping."""
    if not isinstance(config.get("values"), dict):
        raise ValueError("step.set needs a 'values' mapping")


async def log_message(ctx: StepContext) -> None:
    """Log the rendered `message` at `level` (default info)."""
    level = logging.getLevelName(str(ctx.config.get("level", "info")).upper())
    ctx.logger.log(
        level if isinstance(level, int) else logging.INFO, "%s", ctx.config.get("message", ""), extra={"step": ctx.step}
    )


def prepare_log(config: Mapping[str, Any]) -> None:
    """`level` must be a logging level."""
    level = str(config.get("level", "info")).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"):
        raise ValueError(f"level {config.get('level')!r} is not debug, info, warning or error")


async def json_response(ctx: StepContext) -> StepResult:
    """End the pipeline with the rendered `body` (default: the data) and `status` (default 200)."""
    config = ctx.config
    body = config["body"] if "body" in config else dict(ctx.data)
    headers = config.get("headers")
    return StepResult(
        response=Response(
            int(config.get("status", 200)), body, {str(k): str(v) for k, v in headers.items()} if headers else {}
        )
    )


def prepare_json_response(config: Mapping[str, Any]) -> None:
    """`status` must be an HTTP status code when it is not templated."""
    status = config.get("status", 200)
    if isinstance(status, int) and not 100 <= status <= 599:
        raise ValueError(f"status {status} is not an HTTP status code")
    if "headers" in config and not isinstance(config["headers"], dict):
        raise ValueError("headers must be a mapping")


@hookimpl
def register_steps(register: Register) -> None:
    """The core data steps."""
    register("step.validate", validate, prepare=prepare_validate)
    register("step.set", set_values, prepare=prepare_set)
    register("step.log", log_message, prepare=prepare_log)
    register("step.transform", transform, prepare=prepare_transform)
    register("step.json_response", json_response, prepare=prepare_json_response)
