"""The shared services a built-in step needs, or a step error when the server has not started them."""

from __future__ import annotations

from server import Services, StepContext, StepError


def services(ctx: StepContext) -> Services:
    """`ctx.services`; a step run outside a started server (no services) fails with a StepError."""
    if ctx.services is None:
        raise StepError(f"step {ctx.step!r} ({ctx.type}): no shared services (the server is not running)")
    return ctx.services
