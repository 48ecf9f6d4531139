"""The worker pool: claims stored jobs, runs them through the engine, heartbeats, then acks, retries or buries."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..engine.executor import Outcome
from ..engine.runner import Engine
from ..errors import QueueUnavailable
from ..settings import Settings
from ..tasks import cancel_and_wait
from .base import Job, Queue, Stats

log = logging.getLogger("workflow.queue")

# Other replicas' enqueues, retries coming due and expired claims are found by polling this often; a
# local enqueue or a freed worker wakes the dispatcher at once.
POLL_SECONDS = 0.5
STATS_SECONDS = 1.0
PRUNE_SECONDS = 300.0
MAX_DELAY = 600.0  # the backoff's ceiling


class Workers:
    """`settings.async_workers` concurrent jobs per replica, fed by one dispatcher task's claims."""

    def __init__(self, queue: Queue, engine: Engine, settings: Settings) -> None:
        self.queue, self.engine = queue, engine
        self.size = settings.async_workers
        self.visibility = settings.queue_visibility
        self.max_attempts = settings.queue_max_attempts
        self.retry_delay = settings.queue_retry_delay
        self.consumer = settings.replica_id
        self.stats: Stats | None = None  # the last refresh, for /healthz and the metrics
        self.error: str | None = None  # why the last refresh failed, while it fails
        self._running: dict[asyncio.Task[None], Job] = {}
        # Claims to keep: job id -> (job, when its claim was last taken or extended, monotonic). One heartbeat task
        # extends them all (its extends go to the backend together); a job leaves before it is settled.
        self._beating: dict[str, tuple[Job, float]] = {}
        # When the last claim filled every free worker, more jobs are likely waiting: the next claim then waits for
        # a quarter of the workers to be free (or the poll interval), so one call fetches several jobs, not one.
        self._backlog = False
        self._min_batch = max(1, self.size // 4)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Called with each job this replica moves to the dead-letter list and its last error (the admin event stream).
        self.on_dead: list[Callable[[Job, str], None]] = []

    async def put(
        self,
        execution_id: str,
        pipeline: str,
        workflow_type: str,
        payload: dict[str, Any],
        dedupe_key: str | None,
        dedupe_ttl: float,
    ) -> bool:
        """The engine's JobQueue: store the job, then wake the dispatcher."""
        job = Job(execution_id, pipeline, workflow_type, payload)
        stored = await self.queue.enqueue(job, dedupe_key, dedupe_ttl)
        if stored:
            self._wake.set()
        return stored

    def start(self) -> None:
        """Start the dispatcher and the stats refresher."""
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="queue-dispatcher"),
            asyncio.create_task(self._monitor(), name="queue-monitor"),
            asyncio.create_task(self._heartbeat(), name="queue-heartbeat"),
        ]

    async def stop(self, timeout: float) -> None:
        """Claim nothing more and let running jobs finish within `timeout`; unstarted jobs stay stored."""
        self._stopping = True
        self._wake.set()
        dispatcher = self._tasks[0]
        # Not cancelled: a claim cut short after its commit would hide its jobs until their visibility expires.
        await asyncio.wait([dispatcher], timeout=timeout)
        if self._running:
            _, late = await asyncio.wait(list(self._running), timeout=timeout)
            for task in late:
                job = self._running[task]
                log.warning("queue job %s still running after %.1fs; it runs again later", job.id, timeout)
            await cancel_and_wait(*late)
        await cancel_and_wait(*self._tasks)

    async def _dispatch(self) -> None:
        waited = False  # the last wait ended by the poll interval, not a wake-up
        while not self._stopping:
            self._wake.clear()  # before claiming: a wake-up during the claim is kept for the next round
            free = self.size - len(self._running)
            if free >= (self._min_batch if self._backlog and not waited else 1):
                try:
                    jobs = await self.queue.claim(self.consumer, free, self.visibility)
                except QueueUnavailable as exc:
                    log.warning("queue: cannot claim jobs: %s", exc.message)
                    jobs = []
                self._backlog = len(jobs) >= free
                if self.stopping:  # claimed while stopping: leave them for the next start
                    for job in jobs:
                        await self._settle(job, self.queue.retry(job, "claimed during shutdown", 0.0), None)
                    return
                claimed = time.monotonic()
                for job in jobs:
                    self._beating[job.id] = (job, claimed)
                    task = asyncio.create_task(self._run(job), name=f"queue-job-{job.id}")
                    self._running[task] = job
                    task.add_done_callback(self._finished)
                if jobs:
                    waited = False
                    continue  # more may be due
            try:
                async with asyncio.timeout(POLL_SECONDS):
                    await self._wake.wait()
                waited = False
            except TimeoutError:
                waited = True

    @property
    def stopping(self) -> bool:
        """stop() was called (read anew after every await)."""
        return self._stopping

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()  # a worker is free

    async def _run(self, job: Job) -> None:
        if job.attempts > self.max_attempts:
            # Claimed again after each attempt's worker died (say, the job kills its process): stop here.
            self._beating.pop(job.id, None)
            died = f"its worker stopped during each of {job.attempts - 1} attempts"
            await self._settle(job, self.queue.bury(job, died), "dead")
            return
        outcome: Outcome | None = None
        error: str | None
        try:
            outcome = await self.engine.run_queued(job.id, job.pipeline, job.payload, job.workflow_type)
            error = None if outcome.error is None else f"{outcome.status}: {outcome.error.message}"
        except Exception as exc:  # the machinery failed, not the pipeline: the job still counts as failed
            log.exception("queue job %s failed", job.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            # No extend is sent for the job from now on; one sent already reaches the backend first (Redis: the
            # same batching queue, in order) or changes nothing once the job is settled.
            self._beating.pop(job.id, None)
        if error is None:
            done = await self._settle(job, self.queue.ack(job), "done")
        elif job.attempts >= self.max_attempts:
            done = await self._settle(job, self.queue.bury(job, error), "dead")
            if done:
                for listener in self.on_dead:
                    listener(job, error)
        else:
            await self._settle(job, self.queue.retry(job, error, self._backoff(job.attempts)), "retried")
            self.engine.executions.retrying(job.id)
            return
        if outcome is not None and done:
            self.engine.executions.finished(outcome, "dead" if error is not None else None)

    def _backoff(self, attempts: int) -> float:
        """Exponential from `retry_delay`, capped, with full jitter in its upper half (replicas spread out)."""
        ceiling = min(self.retry_delay * 2.0 ** (attempts - 1), MAX_DELAY)
        return ceiling * random.uniform(0.5, 1.0)

    async def _settle(self, job: Job, call: Awaitable[bool], outcome: str | None) -> bool:
        """Await the backend call that settles `job` and count it; a lost claim or an outage is only logged."""
        try:
            settled = bool(await call)
        except QueueUnavailable as exc:
            log.warning("queue job %s not settled (it runs again after its visibility): %s", job.id, exc.message)
            return False
        if not settled:
            log.warning("queue job %s: claim lost (visibility expired); another worker has it", job.id)
        elif outcome is not None:
            self.engine.metrics.child(self.engine.metrics.queue_jobs, outcome).value += 1.0
        return settled

    async def _heartbeat(self) -> None:
        """Keep the claims of running jobs, each extended every third of the visibility, so a slow pipeline is
        never handed to another worker; the extends due at one tick go out together."""
        every = self.visibility / 3
        while True:
            now = time.monotonic()
            due = [job for job, at in self._beating.values() if now - at >= every]
            if due:
                for job in due:
                    self._beating[job.id] = (job, now)
                results = await asyncio.gather(
                    *(self.queue.extend(job, self.visibility) for job in due), return_exceptions=True
                )
                for job, result in zip(due, results, strict=True):
                    if job.id not in self._beating:  # settled meanwhile: nothing to keep
                        continue
                    if isinstance(result, QueueUnavailable):
                        log.warning("queue job %s: heartbeat failed: %s", job.id, result.message)
                    elif isinstance(result, BaseException):
                        log.error("queue job %s: heartbeat failed", job.id, exc_info=result)
                    elif not result:
                        log.warning("queue job %s: claim lost while running", job.id)
                        self._beating.pop(job.id, None)
            oldest = min((at for _, at in self._beating.values()), default=time.monotonic())
            await asyncio.sleep(max(0.01, oldest + every - time.monotonic()))

    async def _monitor(self) -> None:
        pruned = time.monotonic()
        while True:
            await self.refresh()
            if time.monotonic() - pruned > PRUNE_SECONDS:
                pruned = time.monotonic()
                try:
                    await self.queue.prune()
                except QueueUnavailable as exc:
                    log.warning("queue: cannot prune de-duplication keys: %s", exc.message)
            await asyncio.sleep(STATS_SECONDS)

    async def refresh(self) -> Stats | None:
        """Read the cluster-wide stats into the gauges; None (and `error` set) when the queue cannot answer."""
        try:
            stats = await self.queue.stats()
        except QueueUnavailable as exc:
            self.error = exc.message
            return None
        self.stats, self.error = stats, None
        self.engine.metrics.queue_depth.set(stats.depth)
        self.engine.metrics.queue_oldest.set(stats.oldest_age)
        return stats

    def health(self) -> dict[str, Any]:
        """The `queue` check of /healthz: degraded while the queue cannot be reached."""
        stats = self.stats or Stats(0, 0, 0.0)
        check: dict[str, Any] = {
            "status": "degraded" if self.error else "ok",
            "backend": self.queue.backend,
            "depth": stats.depth,
            "dead": stats.dead,
            "oldest_age_seconds": round(stats.oldest_age, 3),
            "workers": self.size,
            "running": len(self._running),
        }
        if self.error:
            check["error"] = self.error
        return check
