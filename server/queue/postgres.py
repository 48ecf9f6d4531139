"""The queue on PostgreSQL: claims with FOR UPDATE SKIP LOCKED, so replicas never wait on each other's rows."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiopg
import psycopg2

from ..databases.pools import close_pool
from ..errors import QueueUnavailable
from . import sql
from .base import DEDUPE_TTL, Job, Queue, Stats

# A pool of its own: enqueues (on the request path) never wait behind the recorder's batches.
_POOL_SIZE = 4
_TIMEOUT = 10.0


def _pg(query: str) -> str:
    return query.replace("?", "%s")


class PostgresQueue(Queue):
    """Jobs in the `queue_jobs` table of the database at `dsn` (migrated by the store)."""

    backend = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn if "connect_timeout" in dsn else f"{dsn} connect_timeout=10"
        self._pool: aiopg.Pool | None = None

    async def open(self) -> None:
        """Create the pool."""
        if self._pool is None:
            self._pool = await aiopg.create_pool(
                self.dsn, minsize=1, maxsize=_POOL_SIZE, timeout=_TIMEOUT, enable_hstore=False
            )

    async def close(self) -> None:
        """Close the pool (bounded)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool, _TIMEOUT)

    @asynccontextmanager
    async def _cursor(self, transaction: bool = True) -> AsyncIterator[aiopg.Cursor]:
        """A cursor, in a transaction when asked; backend failures become QueueUnavailable."""
        if self._pool is None:
            raise QueueUnavailable("the queue is not open")
        try:
            async with asyncio.timeout(_TIMEOUT), self._pool.acquire() as conn, conn.cursor() as cur:
                if not transaction:
                    yield cur
                    return
                async with cur.begin():
                    yield cur
        except (psycopg2.Error, OSError, TimeoutError) as exc:
            raise QueueUnavailable(f"the queue cannot be reached: {exc}") from None

    async def _one(self, query: str, params: tuple[Any, ...]) -> int:
        async with self._cursor(transaction=False) as cur:
            await cur.execute(_pg(query), params)
            return int(cur.rowcount)

    async def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self._cursor(transaction=False) as cur:
            await cur.execute(_pg(query), params)
            return list(await cur.fetchall())

    async def enqueue(self, job: Job, dedupe_key: str | None = None, dedupe_ttl: float = DEDUPE_TTL) -> bool:
        """Insert the de-duplication key and the job in one transaction."""
        job.dedupe_key = dedupe_key
        now = job.enqueued_at = job.enqueued_at or time.time()
        if dedupe_key is None:  # one statement is its own transaction: one round trip fewer
            await self._one(sql.INSERT, sql.insert_params(job))
            return True
        async with self._cursor() as cur:
            await cur.execute(_pg(sql.DEDUPE_CLEAR), (dedupe_key, now))
            await cur.execute(_pg(sql.DEDUPE_INSERT), (dedupe_key, now + dedupe_ttl))
            if cur.rowcount == 0:
                return False
            await cur.execute(_pg(sql.INSERT), sql.insert_params(job))
        return True

    async def claim(self, consumer: str, count: int, visibility: float) -> list[Job]:
        """Claim due jobs, skipping rows another replica is claiming right now."""
        now, receipt = time.time(), secrets.token_hex(8)
        claim = sql.CLAIM.format(lock=" FOR UPDATE SKIP LOCKED")
        rows = await self._rows(claim, (now + visibility, receipt, consumer, now, count))
        return sorted((sql.job_from(r, receipt) for r in rows), key=lambda j: j.enqueued_at)

    async def extend(self, job: Job, visibility: float) -> bool:
        """Push the job's visibility out."""
        return await self._one(sql.EXTEND, (time.time() + visibility, job.id, job.receipt)) == 1

    async def ack(self, job: Job) -> bool:
        """Delete the finished job."""
        return await self._one(sql.ACK, (job.id, job.receipt)) == 1

    async def retry(self, job: Job, error: str, delay: float) -> bool:
        """Release the job until `delay` from now."""
        return await self._one(sql.RETRY, (time.time() + delay, error, job.id, job.receipt)) == 1

    async def bury(self, job: Job, error: str) -> bool:
        """Mark the job dead."""
        return await self._one(sql.BURY, (error, job.id, job.receipt)) == 1

    async def pending(self, limit: int) -> list[tuple[Job, str]]:
        """Waiting and running jobs, oldest first."""
        return [(sql.job_from(r), r[-1]) for r in await self._rows(sql.PENDING, (limit,))]

    async def dead(self, limit: int) -> list[Job]:
        """Dead letters, oldest first."""
        return [sql.job_from(r) for r in await self._rows(sql.DEAD, (limit,))]

    async def requeue(self, job_id: str) -> bool:
        """Make a dead job due now."""
        return await self._one(sql.REQUEUE, (time.time(), job_id)) == 1

    async def status(self, job_id: str) -> tuple[str, str | None] | None:
        """The stored job's state and last error."""
        rows = await self._rows(sql.STATUS, (job_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def stats(self) -> Stats:
        """Depth, dead and oldest age."""
        return sql.stats_from((await self._rows(sql.STATS, ()))[0], time.time())

    async def prune(self) -> int:
        """Delete expired de-duplication keys."""
        return await self._one(sql.PRUNE, (time.time(),))
