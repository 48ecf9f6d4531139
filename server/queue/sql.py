"""The queue's SQL, shared by both store backends in `?` style; rows to Jobs and back."""

from __future__ import annotations

import abc
import json
import time
from typing import Any

from ..store.codec import dump_json
from .base import Job, Queue, Stats

COLUMNS = "id, kind, pipeline, workflow_type, payload, attempts, enqueued_at, dedupe_key, last_error"

# An expired key of the same name is cleared first, inside the enqueue's transaction, so it never blocks.
DEDUPE_CLEAR = "DELETE FROM queue_dedupe WHERE key = ? AND expires_at <= ?"
DEDUPE_INSERT = "INSERT INTO queue_dedupe (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
INSERT = f"INSERT INTO queue_jobs ({COLUMNS}, state, available_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, NULL, 'queued', ?)"
# Due jobs: new ones, retries whose delay has passed, and claims whose visibility ran out (a dead worker).
# `{lock}` is PostgreSQL's FOR UPDATE SKIP LOCKED; SQLite's BEGIN IMMEDIATE already serialises claims.
CLAIM = (
    "UPDATE queue_jobs SET state = 'running', attempts = attempts + 1, available_at = ?, receipt = ?, "
    "claimed_by = ? WHERE id IN (SELECT id FROM queue_jobs WHERE state <> 'dead' AND available_at <= ? "
    f"ORDER BY available_at LIMIT ?{{lock}}) RETURNING {COLUMNS}"
)
EXTEND = "UPDATE queue_jobs SET available_at = ? WHERE id = ? AND receipt = ? AND state = 'running'"
ACK = "DELETE FROM queue_jobs WHERE id = ? AND receipt = ?"
RETRY = (
    "UPDATE queue_jobs SET state = 'queued', available_at = ?, receipt = NULL, claimed_by = NULL, "
    "last_error = ? WHERE id = ? AND receipt = ?"
)
BURY = (
    "UPDATE queue_jobs SET state = 'dead', receipt = NULL, claimed_by = NULL, last_error = ? "
    "WHERE id = ? AND receipt = ?"
)
PENDING = f"SELECT {COLUMNS}, state FROM queue_jobs WHERE state <> 'dead' ORDER BY enqueued_at, id LIMIT ?"
DEAD = f"SELECT {COLUMNS} FROM queue_jobs WHERE state = 'dead' ORDER BY enqueued_at, id LIMIT ?"
REQUEUE = "UPDATE queue_jobs SET state = 'queued', attempts = 0, available_at = ? WHERE id = ? AND state = 'dead'"
STATUS = "SELECT state, last_error FROM queue_jobs WHERE id = ?"
STATS = (
    "SELECT coalesce(sum(CASE WHEN state <> 'dead' THEN 1 ELSE 0 END), 0), "
    "coalesce(sum(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0), "
    "min(CASE WHEN state <> 'dead' THEN enqueued_at END) FROM queue_jobs"
)
PRUNE = "DELETE FROM queue_dedupe WHERE expires_at <= ?"


def insert_params(job: Job) -> tuple[Any, ...]:
    """INSERT's parameters for `job` (enqueued and available at its `enqueued_at`)."""
    payload = dump_json(job.payload) or "{}"
    return (
        job.id,
        job.kind,
        job.pipeline,
        job.workflow_type,
        payload,
        job.enqueued_at,
        job.dedupe_key,
        job.enqueued_at,
    )


def job_from(row: tuple[Any, ...], receipt: str | None = None) -> Job:
    """A Job from a row of COLUMNS."""
    payload = json.loads(row[4]) if isinstance(row[4], str) else row[4]
    return Job(
        id=row[0],
        kind=row[1],
        pipeline=row[2],
        workflow_type=row[3],
        payload=payload if isinstance(payload, dict) else {},
        attempts=int(row[5]),
        enqueued_at=float(row[6]),
        dedupe_key=row[7],
        receipt=receipt,
        last_error=row[8],
    )


def stats_from(row: tuple[Any, ...], now: float) -> Stats:
    """Stats from the STATS row at `now`."""
    oldest = row[2]
    return Stats(int(row[0]), int(row[1]), max(0.0, now - float(oldest)) if oldest is not None else 0.0)


class SqlQueue(Queue):
    """What the PostgreSQL and SQLite backends share: every operation but enqueue and claim is one statement."""

    @abc.abstractmethod
    async def _one(self, query: str, params: tuple[Any, ...]) -> int:
        """Run one statement of this module; the number of rows it changed."""

    @abc.abstractmethod
    async def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one query of this module; its rows as tuples."""

    async def extend(self, job: Job, visibility: float) -> bool:
        """Push the job's visibility out."""
        return await self._one(EXTEND, (time.time() + visibility, job.id, job.receipt)) == 1

    async def ack(self, job: Job) -> bool:
        """Delete the finished job."""
        return await self._one(ACK, (job.id, job.receipt)) == 1

    async def retry(self, job: Job, error: str, delay: float) -> bool:
        """Release the job until `delay` from now."""
        return await self._one(RETRY, (time.time() + delay, error, job.id, job.receipt)) == 1

    async def bury(self, job: Job, error: str) -> bool:
        """Mark the job dead."""
        return await self._one(BURY, (error, job.id, job.receipt)) == 1

    async def pending(self, limit: int) -> list[tuple[Job, str]]:
        """Waiting and running jobs, oldest first."""
        return [(job_from(r), r[-1]) for r in await self._rows(PENDING, (limit,))]

    async def dead(self, limit: int) -> list[Job]:
        """Dead letters, oldest first."""
        return [job_from(r) for r in await self._rows(DEAD, (limit,))]

    async def requeue(self, job_id: str) -> bool:
        """Make a dead job due now."""
        return await self._one(REQUEUE, (time.time(), job_id)) == 1

    async def status(self, job_id: str) -> tuple[str, str | None] | None:
        """The stored job's state and last error."""
        rows = await self._rows(STATUS, (job_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def stats(self) -> Stats:
        """Depth, dead and oldest age."""
        return stats_from((await self._rows(STATS, ()))[0], time.time())

    async def prune(self) -> int:
        """Delete expired de-duplication keys."""
        return await self._one(PRUNE, (time.time(),))
