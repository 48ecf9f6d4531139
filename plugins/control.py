"""Flow steps: conditional routing, publishing events and delegating to another pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server import Register, StepContext, StepError, StepResult, hookimpl

from .paths import lookup
from .services import services

# --------------------------------------------------------------------------- step.conditional


def prepare_conditional(config: Mapping[str, Any]) -> bool:
    """`field` names the value to route on; `routes` maps values to step names.

    Returns whether `field` is a plain dot path (read from the data) rather than a template.
    """
    if not isinstance(config.get("field"), str) or not config["field"]:
        raise ValueError("step.conditional needs 'field' (a template or a dot path)")
    routes = config.get("routes")
    if not isinstance(routes, dict) or not routes:
        raise ValueError("step.conditional needs 'routes' mapping values to step names")
    for target in [*routes.values(), config.get("default")]:
        if target is not None and not isinstance(target, str):
            raise ValueError(f"route target {target!r} must be a step name")
    return "{{" not in config["field"]


def conditional_targets(config: Mapping[str, Any]) -> list[str]:
    """Every step the conditional may jump to: its routes and its default."""
    targets = list(dict.fromkeys(config.get("routes", {}).values()))
    return [*targets, config["default"]] if config.get("default") and config["default"] not in targets else targets


async def conditional(ctx: StepContext) -> StepResult:
    """Jump to the route matching `field`'s value, else to `default`; fail when neither exists."""
    value = lookup(ctx.data, ctx.config["field"]) if ctx.prepared else ctx.config["field"]
    # YAML reads unquoted keys such as `true:` or `200:` as bool/int, so compare keys as text.
    routes: dict[str, str] = {_route_key(k): v for k, v in ctx.config["routes"].items()}
    key = _route_key(value)
    target = routes.get(key) or ctx.config.get("default")
    if target is None:
        raise StepError(f"no route for value {key!r} and no default", value=key)
    return StepResult(output={"route": key}, goto=target)


def _route_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- step.publish


def prepare_publish(config: Mapping[str, Any]) -> None:
    """`topic` is required."""
    if not isinstance(config.get("topic"), str) or not config["topic"]:
        raise ValueError("step.publish needs a 'topic'")
    if "payload" in config and not isinstance(config["payload"], (dict, str)):
        raise ValueError("payload must be a mapping (or a template giving one)")


async def publish(ctx: StepContext) -> dict[str, Any]:
    """Publish `payload` (default: the data) on `topic`; event-triggered pipelines run for it."""
    payload = ctx.config.get("payload", ctx.data)
    if not isinstance(payload, Mapping):
        raise StepError(f"payload rendered to {type(payload).__name__}, not a mapping")
    started = await services(ctx).publish(ctx.config["topic"], dict(payload))
    return {"published": {"topic": ctx.config["topic"], "subscribers": started}}


# --------------------------------------------------------------------------- step.delegate


def prepare_delegate(config: Mapping[str, Any]) -> None:
    """`pipeline` is required; `input` is an optional mapping."""
    if not isinstance(config.get("pipeline"), str) or not config["pipeline"]:
        raise ValueError("step.delegate needs 'pipeline' (the name of another pipeline)")


async def delegate(ctx: StepContext) -> dict[str, Any]:
    """Run another pipeline with `input` (default: the data) and output its result."""
    payload = ctx.config.get("input", ctx.data)
    if not isinstance(payload, Mapping):
        raise StepError(f"input rendered to {type(payload).__name__}, not a mapping")
    outcome = await services(ctx).run_pipeline(ctx.config["pipeline"], dict(payload), depth=ctx.depth + 1)
    result = outcome.result
    key = ctx.config.get("output")
    if key:
        return {key: result}
    return dict(result) if isinstance(result, Mapping) else {"result": result}


@hookimpl
def register_steps(register: Register) -> None:
    """The flow steps."""
    register("step.conditional", conditional, prepare=prepare_conditional, routes=conditional_targets)
    register("step.publish", publish, prepare=prepare_publish)
    register("step.delegate", delegate, prepare=prepare_delegate)
