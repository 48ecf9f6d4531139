"""The store: executions, components and the audit log, in SQLite by default or PostgreSQL when configured.

Start-up order for the app: `store_context` must come BEFORE `engine_context` in `cleanup_ctx`, so on
shutdown the queue drains first and the recorder then writes out everything it still holds.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from aiohttp import web

from ..keys import ENGINE, RECORDER, STORE
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

__all__ = [
    "MAX_PAGE", "RECORDER", "STORE", "AuditRow", "ComponentRow", "ComponentVersion", "ExecutionRow",
    "ExecutionSink", "InvalidCursor", "Recorder", "ReplicaComponent", "Retention", "SqliteStore", "StepRow",
    "Store", "execution_row", "open_store", "running_store", "store_context",
]

SQLITE_FILE = "workflow.db"


def open_store(settings: Settings) -> Store:
    """The configured store, not yet opened: PostgreSQL when `settings.db` is set, else SQLite in data_dir."""
    if settings.db is not None:
        from .postgres import PostgresStore  # psycopg2 loads only when PostgreSQL is configured

        return PostgresStore(settings.db.dsn(), pool_size=settings.db.pool_size)
    return SqliteStore(settings.data_dir / SQLITE_FILE)


@asynccontextmanager
async def running_store(settings: Settings, *, prune_every: float = 300.0) -> AsyncIterator[tuple[Store, Recorder]]:
    """An opened store with its recorder and retention running; on exit flush, stop and close them."""
    store = open_store(settings)
    await store.open()
    recorder = Recorder(store)
    retention = Retention(store, settings.history_days, every=prune_every)
    recorder.start()
    retention.start()
    try:
        yield store, recorder
    finally:
        await retention.stop()
        await recorder.stop(settings.shutdown_timeout)
        await store.close()


async def store_context(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: opens the store and hands it, with its recorder, to the engine."""
    engine = app[ENGINE]
    async with running_store(engine.settings) as (store, recorder):
        app[STORE], app[RECORDER] = store, recorder
        engine.store = store
        engine.recorder = recorder if engine.settings.record_executions else None
        yield
        engine.recorder = None
