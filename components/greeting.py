"""A greeting step: the smallest useful component."""

from server import StepContext, hookimpl


async def greet(ctx: StepContext) -> dict:
    """Greet `config.name`, else the data's `name`, else the world."""
    name = ctx.config.get("name") or ctx.data.get("name") or "world"
    greeting = ctx.config.get("greeting", "hello")
    return {"greeting": f"{greeting} {name}"}


@hookimpl
def register_steps(register):
    register("step.greet", greet)
