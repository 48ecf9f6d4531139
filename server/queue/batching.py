"""Calls to a backend made in one event-loop iteration, sent together: one round trip for many callers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import QueueUnavailable

BATCH = 256  # enqueues (or settling calls) sent in one script call at most
IN_FLIGHT = 1  # batches of one kind under way at once; calls arriving meanwhile wait and go in the next one


class Coalescer:
    """Calls made while the event loop runs one iteration go to Redis together, as one script call.

    `send` takes the calls' argument tuples and returns one integer per call, in order. A batch is sent at the end
    of the loop iteration its first call arrived in (or once it holds `BATCH` calls); while `IN_FLIGHT` batches
    are under way, new calls wait for one of them to end and go in the next, so a busy server sends fewer, larger
    batches. When the script call fails, every caller of that batch gets its own QueueUnavailable.
    """

    def __init__(self, send: Callable[[list[tuple[str, ...]]], Awaitable[Sequence[Any]]]) -> None:
        self._send = send
        self._waiting: list[tuple[tuple[str, ...], asyncio.Future[int]]] = []
        self._flushing = False  # a flush is scheduled for the end of this loop iteration
        self._batches: set[asyncio.Task[None]] = set()

    async def __call__(self, call: tuple[str, ...]) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._waiting.append((call, future))
        if len(self._waiting) >= BATCH and len(self._batches) < IN_FLIGHT:
            self._flush()
        elif not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flushing = False
        self._waiting = [(call, future) for call, future in self._waiting if not future.done()]  # callers gone
        while self._waiting and len(self._batches) < IN_FLIGHT:
            batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
            task = asyncio.create_task(self._run(batch), name="redis-queue-batch")
            self._batches.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        if self._waiting and not self._flushing:
            self._flush()

    async def _run(self, batch: list[tuple[tuple[str, ...], asyncio.Future[int]]]) -> None:
        try:
            results = await self._send([call for call, _ in batch])
            if len(results) != len(batch):
                raise QueueUnavailable(f"the queue answered {len(results)} results for {len(batch)} calls")
        except QueueUnavailable as exc:
            # The calls that queued up behind this batch would each wait for the same unreachable queue, a timeout
            # per batch ahead of them: they fail now too, so no caller waits past one timeout.
            stranded, self._waiting = self._waiting, []
            for _, future in (*batch, *stranded):
                if not future.done():
                    future.set_exception(QueueUnavailable(exc.message))
            return
        except BaseException:  # cancelled (the queue is closing), or a bug: no caller waits forever
            for _, future in batch:
                if not future.done():
                    future.set_exception(QueueUnavailable("the queue was closed"))
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its caller was cancelled meanwhile
                future.set_result(int(result))

    async def drain(self) -> None:
        """Wait for the batches under way and those waiting (close() calls this before closing the connections)."""
        while self._batches or self._waiting:
            if self._batches:
                await asyncio.wait(list(self._batches))
            else:
                self._flush()
