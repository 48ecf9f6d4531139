"""The in-process async queue: bounded, drained on shutdown, its depth exported as a gauge."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge

from ..errors import ServiceUnavailable

log = logging.getLogger("workflow.queue")

Job = Callable[[], Awaitable[object]]


class LocalQueue:
    """Runs submitted jobs on a fixed number of worker tasks."""

    def __init__(self, *, workers: int, capacity: int, depth_gauge: Gauge) -> None:
        self.workers = workers
        self._queue: asyncio.Queue[Job] = asyncio.Queue(capacity)
        self._tasks: list[asyncio.Task[None]] = []
        self._depth = depth_gauge
        self._closed = False

    def submit(self, job: Job) -> None:
        """Queue `job`; raise ServiceUnavailable when full or shutting down."""
        if self._closed:
            raise ServiceUnavailable("the server is shutting down")
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise ServiceUnavailable("the async queue is full; retry later") from None
        self._depth.set(self._queue.qsize())

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet picked up by a worker)."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the worker tasks."""
        self._tasks = [asyncio.create_task(self._work(), name=f"queue-worker-{i}") for i in range(self.workers)]

    async def stop(self, timeout: float) -> None:
        """Refuse new jobs, let queued and running ones finish within `timeout`, then cancel the rest."""
        self._closed = True
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            log.warning("async queue not drained after %.1fs; %d job(s) dropped", timeout, self._queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self._depth.set(self._queue.qsize())
            try:
                await job()
            except Exception:  # a job's failure must not kill the worker
                log.exception("async job failed")
            finally:
                self._queue.task_done()
