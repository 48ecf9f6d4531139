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
from .base import DEDUPE_TTL, Job
from .sql import SqlQueue

# A pool of its own: enqueues (on the request path) never wait behind the recorder's batches. Enqueues share it
# with the claims, heartbeats and settles of the workers (8 by default): with 4 connections, Slack events at
# 500/s waited for one (bench_chat.py: ack p99 2 s); 16 took p99 to 0.3 s on a busy 2-core machine. 12 leaves
# room for three replicas and their stores under PostgreSQL's default 100 connections.
_POOL_SIZE = 12
_TIMEOUT = 10.0


def _pg(query: str) -> str:
    return query.replace("?", "%s")


class PostgresQueue(SqlQueue):
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
