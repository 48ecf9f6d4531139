"""The durable queue's interface: every backend (SQLite, PostgreSQL, later Redis Streams) keeps this contract."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

# Jobs of this kind run a named pipeline of the config in service (the only kind so far; chat events add theirs).
PIPELINE = "pipeline"
DEDUPE_TTL = 86400.0  # de-duplication keys are kept at least a day (CONTRACT §8)


@dataclass(slots=True)
class Job:
    """One unit of work: `id` is the execution id, `payload` any JSON object, times in epoch seconds."""

    id: str
    pipeline: str
    workflow_type: str
    payload: dict[str, Any]
    kind: str = PIPELINE
    attempts: int = 0  # claims so far, this one included once claimed
    enqueued_at: float = 0.0
    dedupe_key: str | None = None
    receipt: str | None = field(default=None, compare=False)  # the backend's proof of the current claim
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    """Cluster-wide: jobs waiting or running, jobs dead, and the age of the oldest waiting or running job."""

    depth: int
    dead: int
    oldest_age: float


class Queue(abc.ABC):
    """A durable, at-least-once job queue shared by every replica of a deployment.

    Every method raises QueueUnavailable (503) when the backend cannot be reached; calls on a job whose
    claim was lost (its visibility expired and another consumer claimed it) change nothing and say so.
    """

    backend: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; the schema exists already (the store migrated it)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connections."""

    @abc.abstractmethod
    async def enqueue(self, job: Job, dedupe_key: str | None = None, dedupe_ttl: float = DEDUPE_TTL) -> bool:
        """Store `job` for a worker; False when `dedupe_key` was seen within its TTL (then nothing is stored).

        The de-duplication record and the job are written in one transaction: both or neither. Once this
        returns True the job survives a crash of this process.
        """

    @abc.abstractmethod
    async def claim(self, consumer: str, count: int, visibility: float) -> list[Job]:
        """Up to `count` jobs for `consumer`, invisible to others for `visibility` seconds; attempts grow by one.

        Claims new jobs, retries whose delay has passed, and jobs whose visibility expired because their
        worker died; two consumers never hold the same job at once.
        """

    @abc.abstractmethod
    async def extend(self, job: Job, visibility: float) -> bool:
        """Heartbeat: keep `job` invisible for `visibility` more seconds; False if the claim was lost."""

    @abc.abstractmethod
    async def ack(self, job: Job) -> bool:
        """The job is done: remove it; False if the claim was lost."""

    @abc.abstractmethod
    async def retry(self, job: Job, error: str, delay: float) -> bool:
        """The attempt failed: release the job to be claimed again after `delay` seconds, keeping `error`."""

    @abc.abstractmethod
    async def bury(self, job: Job, error: str) -> bool:
        """The last attempt failed: move the job to the dead-letter list with `error`."""

    @abc.abstractmethod
    async def pending(self, limit: int) -> list[tuple[Job, str]]:
        """Jobs waiting or running with their status (`queued` or `running`), oldest first."""

    @abc.abstractmethod
    async def dead(self, limit: int) -> list[Job]:
        """Dead letters with their last error, oldest first."""

    @abc.abstractmethod
    async def requeue(self, job_id: str) -> bool:
        """Put a dead letter back in the queue with its attempts reset; False when no such dead job."""

    @abc.abstractmethod
    async def status(self, job_id: str) -> tuple[str, str | None] | None:
        """(`queued`, `running` or `dead`, its last error) for a job still stored, else None (done or unknown)."""

    @abc.abstractmethod
    async def stats(self) -> Stats:
        """Depth, dead count and oldest age across the whole deployment."""

    @abc.abstractmethod
    async def prune(self) -> int:
        """Delete expired de-duplication keys; return how many went."""
