"""The embedded queue: the store's SQLite file through a connection of its own, so the recorder's batches
only ever make an enqueue wait for SQLite's write lock, never behind the store's whole operation queue."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import QueueUnavailable
from . import sql
from .base import DEDUPE_TTL, Job
from .sql import SqlQueue

# SQLite's own busy handler sleeps up to 100 ms at a time once a wait grows, so a waiter wakes long after
# the recorder's batch committed; BEGIN is retried here every 2 ms instead, for at most 10 s (the store's bound).
_RETRY_SECONDS = 0.002
_BUSY_SECONDS = 10.0


class SqliteQueue(SqlQueue):
    """Jobs in the `queue_jobs` table of the SQLite file at `path` (WAL: readers never wait for the writer)."""

    backend = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one connection: transactions must not interleave

    async def open(self) -> None:
        """Connect to the file the store opened (and migrated) already."""
        if self._db is None:
            db = await aiosqlite.connect(self.path, isolation_level=None)
            await db.execute("PRAGMA busy_timeout = 0")
            # NORMAL in WAL mode survives a process crash: an enqueued job outlives a kill -9.
            await db.execute("PRAGMA synchronous = NORMAL")
            self._db = db

    async def close(self) -> None:
        """Close the connection once no call uses it."""
        async with self._lock:
            if self._db is not None:
                db, self._db = self._db, None
                await db.close()

    @asynccontextmanager
    async def _tx(self, write: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, inside BEGIN IMMEDIATE when writing; backend failures become QueueUnavailable."""
        async with self._lock:
            if self._db is None:
                raise QueueUnavailable("the queue is not open")
            db = self._db
            try:
                if not write:
                    yield db
                    return
                await _begin(db)
                try:
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    # Also when COMMIT failed or was cancelled: a transaction left open would break every later one.
                    with suppress(sqlite3.Error, ValueError):
                        await db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError, ValueError) as exc:  # ValueError: aiosqlite's closed connection
                raise QueueUnavailable(f"the queue cannot be reached: {exc}") from None

    async def _one(self, query: str, params: tuple[Any, ...]) -> int:
        async with self._tx() as db, db.execute(query, params) as cursor:
            return cursor.rowcount

    async def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self._tx(write=False) as db:
            return [tuple(r) for r in await db.execute_fetchall(query, params)]

    async def enqueue(self, job: Job, dedupe_key: str | None = None, dedupe_ttl: float = DEDUPE_TTL) -> bool:
        """Insert the de-duplication key and the job in one transaction."""
        job.dedupe_key = dedupe_key
        now = job.enqueued_at = job.enqueued_at or time.time()
        async with self._tx() as db:
            if dedupe_key is not None:
                await db.execute(sql.DEDUPE_CLEAR, (dedupe_key, now))
                async with db.execute(sql.DEDUPE_INSERT, (dedupe_key, now + dedupe_ttl)) as cursor:
                    if cursor.rowcount == 0:
                        return False  # nothing was written: COMMIT ends an empty transaction
            await db.execute(sql.INSERT, sql.insert_params(job))
        return True

    async def claim(self, consumer: str, count: int, visibility: float) -> list[Job]:
        """Claim due jobs under the write lock (one claimer at a time)."""
        now, receipt = time.time(), secrets.token_hex(8)
        async with self._tx() as db:
            rows = await db.execute_fetchall(
                sql.CLAIM.format(lock=""), (now + visibility, receipt, consumer, now, count)
            )
        return sorted((sql.job_from(tuple(r), receipt) for r in rows), key=lambda j: j.enqueued_at)


async def _begin(db: aiosqlite.Connection) -> None:
    """BEGIN IMMEDIATE, retried every 2 ms while another connection holds the write lock."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            await db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        await asyncio.sleep(_RETRY_SECONDS)
