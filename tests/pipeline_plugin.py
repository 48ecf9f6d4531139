"""Step types for the pipeline and step tests, and an engine whose registry includes them (conftest's `serve`)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
import time
from typing import Any

from server import StepError, hookimpl, logs
from server.config.loader import load_config_text
from server.engine.runner import Engine
from server.hooks.manager import build_plugin_manager
from server.hooks.registry import build_registry
from server.metrics.catalog import Metrics
from server.settings import Settings

# What `test.record` saw, in execution order; cleared by conftest's `serve` fixture.
CALLS: list[dict[str, Any]] = []


async def record(ctx) -> Any:
    """Remember the step's view, then output `config.output` (if any)."""
    CALLS.append(
        {
            "step": ctx.step,
            "data": dict(ctx.data),
            "trigger": dict(ctx.trigger),
            "config": dict(ctx.config),
            "execution_id": ctx.execution_id,
        }
    )
    return ctx.config.get("output")


async def sleep(ctx) -> dict[str, Any]:
    """Sleep `seconds` on the event loop."""
    await asyncio.sleep(float(ctx.config.get("seconds", 5)))
    return {"slept": ctx.step}


def sync_sleep(ctx) -> dict[str, Any]:
    """A plain `def` step: block its thread for `seconds`, report which thread ran it."""
    time.sleep(float(ctx.config.get("seconds", 0.3)))
    return {
        f"{ctx.step}_main_thread": threading.current_thread() is threading.main_thread(),
        f"{ctx.step}_execution_id": logs.execution_id.get(),
    }


async def boom(ctx) -> None:
    """Raise an unexpected exception carrying text that must never reach the client."""
    raise RuntimeError("secret-internal-detail")


async def fail(ctx) -> None:
    """Fail the step the way a plugin does."""
    raise StepError(str(ctx.config.get("message", "failed on purpose")))


# While true, `test.flaky` fails (a queue job failing every attempt until a test flips it).
FLAKY = {"fail": True}


async def flaky(ctx) -> dict[str, Any]:
    """Fail while FLAKY["fail"] is set, else succeed."""
    if FLAKY["fail"]:
        raise StepError("flaky step failed")
    return {"flaky": "ok"}


@hookimpl
def register_steps(register) -> None:
    """The test step types."""
    register("test.record", record)
    register("test.sleep", sleep)
    register("test.sync_sleep", sync_sleep)
    register("test.boom", boom)
    register("test.fail", fail)
    register("test.flaky", flaky)


def build_test_engine(settings: Settings, text: str, *, strict: bool = True) -> Engine:
    """Like server.app.build_engine, with this module registered on the plugin manager."""
    pm = build_plugin_manager(entry_points=False)
    pm.register(sys.modules[__name__], name="tests.pipeline_plugin")
    registry = build_registry(pm)
    config = load_config_text(textwrap.dedent(text), registry, strict=strict)
    return Engine(settings, Metrics(), pm, registry, config)
