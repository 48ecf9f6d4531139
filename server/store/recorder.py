"""Write-behind recording of executions: a bounded buffer that one background task flushes in batches.

Batching: under load every write is a full batch (`batch` rows), started as soon as one is waiting; a
partial batch is written when `interval` passes without the buffer filling up, and on stop. So an
execution is in the store within about `interval` seconds, and a busy server makes few, big commits.

Overflow policy: at most `capacity` executions wait in the buffer (plus one batch being written). When it is
full, `add` drops the OLDEST waiting execution to make room for the new one and counts it in `dropped`; one
warning is logged per overflow episode (an episode ends when the buffer has been written out completely).
The newest executions are kept because they are the ones operators look at while something is wrong.

Outages: when a write fails the batch goes back to the front of the buffer and the task retries with
exponential backoff (capped at `max_backoff`, with jitter so replicas do not retry in step); nothing is
lost unless the outage lasts long enough for the buffer to overflow. When the database answers (`ping`)
but refuses a batch, the rows are retried one by one: a row that fails on its own while others succeed
is logged and discarded (`rejected`), so one bad row never blocks recording.

Memory: `add` turns each execution into a compact `sql.Record` (text and numbers) at once, so a finished
Outcome with its data is freed when its request ends instead of aging in the buffer, where the garbage
collector walked all its objects again and again (a few percent of the server's CPU under load).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..tasks import cancel_and_wait
from . import sql
from .base import ExecutionRow
from .detail import DetailPolicy
from .sql import Record

if TYPE_CHECKING:
    from ..engine.executor import Outcome

log = logging.getLogger("workflow.store.recorder")

_PING_TIMEOUT = 5.0


class ExecutionSink(Protocol):
    """What the recorder needs from a store."""

    async def record_executions(self, rows: Sequence[Record]) -> None: ...

    async def ping(self) -> None: ...


class Recorder:
    """Buffers finished executions in memory and writes them to the store in the background."""

    # Batches of 2000: random ids put almost every row of a batch in its own page of the id index, so bigger
    # batches share pages and write less per row (about a quarter less SQLite CPU than 500 at 100k rows).
    def __init__(
        self,
        store: ExecutionSink,
        *,
        capacity: int = 10_000,
        batch: int = 2000,
        interval: float = 0.5,
        max_backoff: float = 30.0,
        details: DetailPolicy | None = None,
    ) -> None:
        if capacity < 1 or batch < 1 or interval <= 0 or max_backoff <= 0:
            raise ValueError("capacity and batch must be at least 1, interval and max_backoff positive")
        self.store = store
        self.details = details  # keeps each execution's payload and step outputs (store/detail.py) when set
        self.capacity, self.batch, self.interval, self.max_backoff = capacity, batch, interval, max_backoff
        self.flushed = 0  # executions written
        self.dropped = 0  # discarded by overflow (oldest first), or added after stop()
        self.rejected = 0  # refused by a reachable database on their own (see the module docstring), or unconvertible
        self.abandoned = 0  # still unwritten when stop() ran out of time
        self.failures = 0  # failed write attempts
        self._buffer: deque[Record] = deque()
        self._inflight: Sequence[Record] = ()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = self._closed = self._backing_off = self._overflowing = False
        self._outage_since: float | None = None
        self.last_error: str | None = None  # the latest failed write, for /healthz

    @property
    def pending(self) -> int:
        """Executions not yet written: waiting plus in flight."""
        return len(self._buffer) + len(self._inflight)

    def find(self, execution_id: str) -> Record | None:
        """The execution `execution_id` if it waits to be written (newest first), else None."""
        for record in reversed(self._buffer):
            if record.id == execution_id:
                return record
        for record in self._inflight:
            if record.id == execution_id:
                return record
        return None

    @property
    def healthy(self) -> bool:
        """False while writes are failing."""
        return self._outage_since is None

    def add(self, row: ExecutionRow | Outcome) -> None:
        """Queue one finished execution: O(1), never awaits; call it on the event loop's thread."""
        if self._closed:
            self.dropped += 1
            return
        try:
            record = sql.prepare(row, self.details)
        except Exception:  # a defect in converting must not fail the request that finished the execution
            self.rejected += 1
            log.exception(
                "execution %s cannot be recorded and is discarded",
                getattr(row, "id", None) or getattr(row, "execution_id", None),
            )
            return
        buffer = self._buffer
        if len(buffer) >= self.capacity:
            buffer.popleft()
            self._overflow(1)
        buffer.append(record)
        # While backing off a full batch must not cut the wait short: that would hammer a dead database.
        if len(buffer) >= self.batch and not self._backing_off:
            self._wake.set()

    def start(self) -> None:
        """Start the background flushing task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="execution-recorder")

    async def stop(self, timeout: float = 10.0) -> None:
        """Write out everything buffered, spending at most `timeout` seconds; what is left is `abandoned`."""
        self._stopping = True
        self.start()  # rows added before a start() still get their chance to be written
        assert self._task is not None
        self._wake.set()
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self.abandoned = self.pending
            await cancel_and_wait(self._task)
            self._buffer.clear()
            log.error(
                "execution recorder stopped with %d executions unwritten: the store did not accept them within %gs",
                self.abandoned,
                timeout,
            )
        self._closed = True

    async def _run(self) -> None:
        delay, failed = self.interval, False
        while True:
            woken = False
            if failed or not self._stopping:
                # Jitter only the backoff: replicas that lost the database together should not return together.
                woken = await self._sleep(delay * random.uniform(0.8, 1.2) if failed else delay)
            if self._stopping and not self._buffer:
                return
            try:
                # Woken by a full batch, write full batches only and leave the rest to the next batch or the
                # interval: each commit rewrites every index page its rows touch, so a trickle of small
                # commits under load costs far more per row than a few big ones.
                failed = not await self._drain(everything=not woken or self._stopping)
            except Exception:  # a defect here must not end recording for the life of the process
                log.exception("execution recorder: unexpected error while flushing")
                failed = True
            self._backing_off = failed
            delay = min(delay * 2, self.max_backoff) if failed else self.interval
            if not failed and self._overflowing and not self._buffer:
                self._overflowing = False
                log.info("execution recorder caught up; %d executions dropped so far", self.dropped)

    async def _sleep(self, seconds: float) -> bool:
        """Wait `seconds` or until woken; True when woken."""
        woken = True
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            woken = False
        self._wake.clear()
        return woken

    async def _drain(self, *, everything: bool = True) -> bool:
        """Write waiting rows batch by batch, only full ones unless `everything`; False when the store failed."""
        while self._buffer and (everything or len(self._buffer) >= self.batch):
            count = min(self.batch, len(self._buffer))
            rows = [self._buffer.popleft() for _ in range(count)]
            self._inflight = rows
            try:
                left = await self._write(rows)
            finally:
                self._inflight = ()
            if left:
                self._requeue(left)
                return False
            if self._outage_since is not None:
                seconds = asyncio.get_running_loop().time() - self._outage_since
                log.warning("execution store is accepting writes again after %.1fs", seconds)
                self._outage_since = None
        return True

    async def _write(self, rows: list[Record]) -> list[Record]:
        """Write `rows`; return those still to be written later (all of them during an outage)."""
        error = await self._attempt(rows)
        if error is None:
            return []
        if await self._reachable():
            # The database answers: retry at once, since the failure may have been one dropped connection.
            error = await self._attempt(rows)
            if error is None:
                return []
            if len(rows) > 1 and await self._reachable():
                return await self._isolate(rows, error)
        self._outage(error)
        return rows

    async def _attempt(self, rows: list[Record]) -> Exception | None:
        try:
            await self.store.record_executions(rows)
        except Exception as exc:
            self.failures += 1
            return exc
        self.flushed += len(rows)
        return None

    async def _isolate(self, rows: list[Record], batch_error: Exception) -> list[Record]:
        """The database answers but keeps refusing the batch: write row by row to find the rows it refuses."""
        refused: list[tuple[Record, Exception]] = []
        written = 0
        for index, row in enumerate(rows):
            error = await self._attempt([row])
            if error is None:
                written += 1
            elif await self._reachable():
                refused.append((row, error))
            else:  # the outage began part-way: keep the rest for later
                self._outage(error)
                return [r for r, _ in refused] + rows[index:]
        if not written:
            # Every row fails on its own: the database refuses writes (full disk, read-only), not these rows.
            self._outage(batch_error)
            return rows
        for bad, exc in refused:
            log.error(
                "execution %s (pipeline %s) cannot be recorded and is discarded: %s: %s",
                bad.id,
                bad.pipeline,
                type(exc).__name__,
                exc,
            )
        self.rejected += len(refused)
        return []

    async def _reachable(self) -> bool:
        try:
            async with asyncio.timeout(_PING_TIMEOUT):
                await self.store.ping()
        except Exception:
            return False
        return True

    def _requeue(self, rows: list[Record]) -> None:
        self._buffer.extendleft(reversed(rows))
        excess = len(self._buffer) - self.capacity
        for _ in range(excess):
            self._buffer.popleft()
        if excess > 0:
            self._overflow(excess)

    def _overflow(self, count: int) -> None:
        self.dropped += count
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "execution recorder buffer is full (%d): dropping the oldest unwritten executions until it catches up",
                self.capacity,
            )

    def _outage(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        if self._outage_since is None:
            self._outage_since = asyncio.get_running_loop().time()
            log.warning(
                "execution store is not accepting writes (%s: %s); keeping %d executions buffered, retrying",
                type(exc).__name__,
                exc,
                self.pending,
            )
        else:
            log.debug("execution store still not accepting writes: %s: %s", type(exc).__name__, exc)
