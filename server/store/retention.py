"""History retention: delete executions older than WORKFLOW_HISTORY_RETENTION, every few minutes."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from ..tasks import cancel_and_wait
from .base import Store

log = logging.getLogger("workflow.store.retention")


class Retention:
    """Prunes executions older than `days` now and then every `every` seconds; `days <= 0` keeps everything."""

    def __init__(self, store: Store, days: float, *, every: float = 300.0) -> None:
        self.store = store
        self.days = days
        self.every = every
        self.pruned = 0
        self._task: asyncio.Task[None] | None = None

    async def prune_once(self) -> int:
        """Delete what is past retention now; return how many executions went."""
        if self.days <= 0:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=self.days)
        count = await self.store.prune_executions(cutoff)
        self.pruned += count
        if count:
            log.info("pruned %d executions started before %s", count, cutoff.isoformat(timespec="seconds"))
        return count

    def start(self) -> None:
        """Start the periodic task (once; not at all when retention is off)."""
        if self._task is None and self.days > 0:
            self._task = asyncio.create_task(self._run(), name="execution-retention")

    async def stop(self) -> None:
        """Stop the periodic task; a prune in progress is abandoned (its committed chunks stay deleted)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.prune_once()
            except Exception as exc:  # the store is away: the next round tries again
                # Unless stop() cancelled the prune and the store raised something else on the way out:
                # swallowing that would keep this task, and stop() with it, waiting for `every` seconds.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                log.warning("pruning old executions failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.every)
