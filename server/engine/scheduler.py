"""Schedule triggers: queue each `schedule` pipeline every `interval`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from ..errors import ServiceUnavailable
from .runner import Engine

log = logging.getLogger("workflow.scheduler")


@asynccontextmanager
async def scheduling(engine: Engine) -> AsyncIterator[None]:
    """One ticking task for the schedule triggers of the config in service, until exit."""
    task = asyncio.create_task(_tick(engine), name="scheduler")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _tick(engine: Engine) -> None:
    loop = asyncio.get_running_loop()
    due: dict[str, float] = {}
    while True:
        now = loop.time()
        # Read the live config each tick, so a reloaded config's schedules take effect.
        for pipeline in engine.config.pipelines.values():
            if pipeline.trigger.type != "schedule":
                continue
            at = due.setdefault(pipeline.name, now + pipeline.trigger.interval)
            if now >= at:
                due[pipeline.name] = now + pipeline.trigger.interval
                try:
                    engine.submit(pipeline, {"scheduled_at": datetime.now(UTC).isoformat()})
                except ServiceUnavailable as exc:
                    log.warning("schedule %s skipped: %s", pipeline.name, exc.message)
        await asyncio.sleep(_next_wakeup(due, now))


def _next_wakeup(due: dict[str, float], now: float) -> float:
    return max(0.01, min(min(due.values(), default=now + 1.0) - now, 1.0))
