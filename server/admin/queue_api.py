"""Admin API for the durable queue (CONTRACT §8): what waits, what died, and re-queueing a dead letter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..errors import NotFound, clip
from ..http.middleware import json_response
from ..keys import IDENTITY, QUEUE, STORE
from ..queue import Job
from .queries import limit_of


def _job(job: Job) -> dict[str, Any]:
    """A job's listing: never its payload, which may hold personal data."""
    return {
        "id": job.id,
        "kind": job.kind,
        "pipeline": job.pipeline,
        "workflow_type": job.workflow_type,
        "attempts": job.attempts,
        "enqueued_at": datetime.fromtimestamp(job.enqueued_at, UTC).isoformat(timespec="milliseconds"),
    }


async def list_queue(request: web.Request) -> web.Response:
    """`GET /api/queue?limit=`: depth and oldest age (cluster-wide), and the jobs waiting or running, oldest first."""
    workers = request.app[QUEUE]
    stats = await workers.queue.stats()
    jobs = await workers.queue.pending(limit_of(request.query))
    return json_response(
        {
            "backend": workers.queue.backend,
            "depth": stats.depth,
            "dead": stats.dead,
            "oldest_age_seconds": round(stats.oldest_age, 3),
            "jobs": [{**_job(job), "status": status} for job, status in jobs],
        }
    )


async def list_dead(request: web.Request) -> web.Response:
    """`GET /api/queue/dead?limit=`: dead letters, oldest first, with their last error."""
    jobs = await request.app[QUEUE].queue.dead(limit_of(request.query))
    return json_response({"dead": [{**_job(job), "error": job.last_error} for job in jobs]})


async def retry_dead(request: web.Request) -> web.Response:
    """`POST /api/queue/dead/{id}/retry`: put a dead letter back in the queue with its attempts reset."""
    job_id = request.match_info["id"]
    if not await request.app[QUEUE].queue.requeue(job_id):
        raise NotFound(f"no dead job {clip(job_id)!r}")
    identity = request[IDENTITY]
    await request.app[STORE].audit(identity.subject, "queue.retry", job_id, request.remote)
    return json_response({"id": job_id, "status": "queued"})
