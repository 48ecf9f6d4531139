"""The durable queue: executions that do not answer their request (async triggers, events, schedules).

Backends: Redis Streams when WORKFLOW_REDIS_ADDR is set (keys prefixed by WORKFLOW_DEPLOYMENT), else the
store's database (PostgreSQL, or the embedded SQLite file), all behind one interface (base.Queue). The store
migrates the tables, so the queue opens after the store.
"""

from __future__ import annotations

from ..settings import Settings
from .base import DEDUPE_TTL, PIPELINE, Job, Queue, Stats
from .worker import Workers

__all__ = ["DEDUPE_TTL", "PIPELINE", "Job", "Queue", "Stats", "Workers", "open_queue"]


def open_queue(settings: Settings) -> Queue:
    """The configured backend, not yet opened: Redis Streams when Redis is configured (unless
    `WORKFLOW_QUEUE_BACKEND=store`), else PostgreSQL when `settings.db` is set, else the SQLite file."""
    if settings.queue_on_redis and settings.redis_addr is not None:
        from .redis import RedisQueue

        return RedisQueue(settings.redis_addr, settings.deployment_name)
    if settings.db is not None:
        from .postgres import PostgresQueue  # psycopg2 loads only when PostgreSQL is configured

        return PostgresQueue(settings.db.dsn())
    from .sqlite import SqliteQueue

    return SqliteQueue(settings.sqlite_path)
