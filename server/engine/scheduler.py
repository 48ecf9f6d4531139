"""Schedule triggers: queue each `schedule` pipeline once per `interval` slot, across every replica."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from ..errors import ServiceUnavailable
from ..tasks import cancel_and_wait
from .runner import Engine

log = logging.getLogger("workflow.scheduler")


@asynccontextmanager
async def scheduling(engine: Engine) -> AsyncIterator[None]:
    """One ticking task for the schedule triggers of the config in service, until exit."""
    task = asyncio.create_task(_tick(engine), name="scheduler")
    try:
        yield
    finally:
        await cancel_and_wait(task)


async def _tick(engine: Engine) -> None:
    # Slots are counted on the wall clock from the epoch, so every replica numbers them alike: each enqueues
    # every slot with the same de-duplication key and the shared queue keeps exactly one.
    seen: dict[str, int] = {}
    while True:
        now = time.time()
        # Read the live config each tick, so a reloaded config's schedules take effect.
        for pipeline in engine.config.pipelines.values():
            if pipeline.trigger.type != "schedule":
                continue
            interval = pipeline.trigger.interval
            slot = int(now // interval)
            if seen.setdefault(pipeline.name, slot) >= slot:
                continue  # the first slot seen is already under way: fire from the next boundary on
            seen[pipeline.name] = slot
            key, ttl = f"schedule:{pipeline.name}:{slot}", max(86400.0, 2 * interval)
            try:
                payload = {"scheduled_at": datetime.fromtimestamp(slot * interval, UTC).isoformat(), "slot": slot}
                await engine.submit(pipeline, payload, dedupe_key=key, dedupe_ttl=ttl)
            except ServiceUnavailable as exc:
                log.warning("schedule %s skipped: %s", pipeline.name, exc.message)
        await asyncio.sleep(_next_wakeup(engine, now))


def _next_wakeup(engine: Engine, now: float) -> float:
    """Until the next slot boundary of any schedule, at most 1 s (a reload may add a shorter one)."""
    intervals = [p.trigger.interval for p in engine.config.pipelines.values() if p.trigger.type == "schedule"]
    nearest = min(((now // i + 1) * i - now for i in intervals), default=1.0)
    return max(0.01, min(nearest + 0.001, 1.0))
