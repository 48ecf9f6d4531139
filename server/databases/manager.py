"""`Databases`: the connections steps use, opened on first use and closed with the engine."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

from ..settings import Settings
from .drivers import Connection, DatabaseError, open_connection
from .specs import DEFAULT, DEFAULT_POOL_SIZE, ConnectionSpec

log = logging.getLogger("workflow.databases")


class Databases:
    """One connection (or pool) per spec, shared by every step; an async context manager that closes them.

    Connections open lazily: a database that only some pipelines use (or that is down) never stops the
    server from starting; the first step to use it connects, and a failed connect is retried next time.
    """

    def __init__(self, settings: Settings) -> None:
        self.default = default_spec(settings)
        self._opening: dict[ConnectionSpec, asyncio.Task[Connection]] = {}
        self._closed = False

    async def get(self, spec: ConnectionSpec | None) -> Connection:
        """The open connection for `spec` (None: the server's own database); DatabaseError if it cannot connect."""
        spec = spec or self.default
        if self._closed:
            raise DatabaseError(spec.name, "the server is shutting down")
        task = self._opening.get(spec)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._opening[spec] = asyncio.get_running_loop().create_task(self._open(spec))
        # Shielded: a step that times out while connecting must not abort the connect other steps wait for.
        return await asyncio.shield(task)

    async def _open(self, spec: ConnectionSpec) -> Connection:
        connection = await open_connection(spec)
        log.info("database connection %r opened (%s)", spec.name, spec.driver)
        return connection

    async def close(self) -> None:
        """Close every connection; later `get` calls fail."""
        self._closed = True
        tasks, self._opening = list(self._opening.values()), {}
        for task in tasks:
            task.cancel()  # a connect still running: nobody will use it
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Connection):
                try:
                    await outcome.close()
                except Exception as exc:  # any driver error: closing must go on for the others
                    log.warning("closing database connection %r failed: %s", outcome.spec.name, exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def default_spec(settings: Settings) -> ConnectionSpec:
    """The server's own database as a spec: PostgreSQL when configured, else the embedded store's file."""
    if settings.db is not None:
        return ConnectionSpec(
            DEFAULT, "postgres", dsn=settings.db.dsn(), pool_size=min(DEFAULT_POOL_SIZE, settings.db.pool_size)
        )
    return ConnectionSpec(DEFAULT, "sqlite", path=str(settings.sqlite_path))
