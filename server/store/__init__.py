"""The store: executions, components and the audit log, in SQLite by default or PostgreSQL when configured.

The store opens before anything that records or reads components, and closes last: on shutdown the queue
drains first and the recorder then writes out everything it still holds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..settings import Settings
from .base import (
    MAX_PAGE,
    AuditRow,
    ComponentRow,
    ComponentVersion,
    ExecutionRow,
    InvalidCursor,
    ReplicaComponent,
    StepRow,
    Store,
    execution_row,
)
from .recorder import ExecutionSink, Recorder
from .retention import Retention
from .sqlite import SqliteStore

log = logging.getLogger("workflow.store")

__all__ = [
    "MAX_PAGE",
    "AuditRow",
    "ComponentRow",
    "ComponentVersion",
    "ExecutionRow",
    "ExecutionSink",
    "InvalidCursor",
    "Recorder",
    "ReplicaComponent",
    "Retention",
    "SqliteStore",
    "StepRow",
    "Store",
    "execution_row",
    "open_store",
    "running_store",
]


def open_store(settings: Settings) -> Store:
    """The configured store, not yet opened: PostgreSQL when `settings.db` is set, else SQLite in data_dir."""
    if settings.db is not None:
        from .postgres import PostgresStore  # psycopg2 loads only when PostgreSQL is configured

        return PostgresStore(settings.db.dsn(), pool_size=settings.db.pool_size)
    return SqliteStore(settings.sqlite_path)


@asynccontextmanager
async def running_store(
    store: Store, recorder: Recorder, settings: Settings, *, prune_every: float = 300.0
) -> AsyncIterator[Store]:
    """Open `store` and run its recorder and retention; on exit flush, stop and close them."""
    await store.open()
    log.info("store: %s, schema version %d", store.kind, await store.schema_version())
    retention = Retention(store, settings.history_days, every=prune_every)
    recorder.start()
    retention.start()
    try:
        yield store
    finally:
        await retention.stop()
        await recorder.stop(settings.shutdown_timeout)
        await store.close()
