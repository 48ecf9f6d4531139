"""PostgreSQL through an aiopg pool; migrations run under an advisory lock so replicas may start together."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import aiopg
import psycopg2

from ..databases.pools import close_pool
from . import sql
from .base import (
    HISTORY_KEPT,
    AuditRow,
    ComponentRow,
    ComponentVersion,
    ExecutionFilter,
    ExecutionRow,
    HistoryRow,
    ReplicaComponent,
    Store,
)
from .codec import dump_json, encode_cursor, utc
from .migrations import ADVISORY_LOCK_CLASS, MIGRATIONS_TABLE, POSTGRES, pending

if TYPE_CHECKING:
    from ..engine.executor import Outcome

log = logging.getLogger("workflow.store")

# A chunk of executions travels as ONE parameter, a JSON array of sql.Records that PostgreSQL unpacks:
# psycopg2 adapts and quotes every parameter on its own, which at 9 a row (and 7 a step) was most of the cost.
# Every component of a report in one statement, as for executions: one round trip whatever the count.
_INSERT_REPLICAS = (
    f"INSERT INTO replica_components ({sql.REPLICA_COLUMNS}) "
    "SELECT %s, r->>0, (r->>1)::int, r->>2, r->>3, r->>4, %s FROM jsonb_array_elements(%s::jsonb) AS r"
)
_INSERT = (
    f"INSERT INTO executions ({sql.EXECUTION_COLUMNS}) "
    "SELECT r->>0, r->>1, r->>2, r->>3, (r->>4)::timestamptz, (r->>5)::float8, nullif(r->6, 'null'), "
    "nullif(r->7, 'null'), r->8, nullif(r->9, 'null') FROM jsonb_array_elements(%s::jsonb) AS r"
    + sql.UPSERT_EXECUTION_TAIL
)
# Rows per INSERT statement (a recorder batch: one round trip), keeping the parameter under a megabyte or so.
_CHUNK = 2000
# The error's message, matched case-insensitively.
_ERROR_TEXT = "error->>'error' ILIKE ? ESCAPE '\\'"
_LOCK_KEY = "%s, hashtext(coalesce(current_schema(), ''))"
_PING_TIMEOUT = 5.0
_CLOSE_TIMEOUT = 10.0

T = TypeVar("T")


def pg(query: str) -> str:
    """A shared `?` query in psycopg2's `%s` style (the shared SQL holds no other `?` or `%`)."""
    return query.replace("?", "%s")


class PostgresStore(Store):
    """PostgreSQL at `dsn` (a libpq string) with a pool of at most `pool_size` connections."""

    kind = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 10, timeout: float = 60.0) -> None:
        # Without a connect timeout, a black-holed database host stalls every acquire for minutes.
        self.dsn = dsn if "connect_timeout" in dsn else f"{dsn} connect_timeout=10"
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: aiopg.Pool | None = None

    async def open(self) -> None:
        """Create the pool and apply pending migrations."""
        if self._pool is not None:
            return
        pool = await aiopg.create_pool(
            self.dsn, minsize=1, maxsize=self.pool_size, timeout=self.timeout, enable_hstore=False
        )
        self._pool = pool
        try:
            await self._migrate()
        except BaseException:
            self._pool = None
            pool.terminate()
            await pool.wait_closed()
            raise
        log.info("store: postgres, pool of up to %d connections", self.pool_size)

    async def close(self) -> None:
        """Close the pool, waiting a bounded time for connections in use."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool, _CLOSE_TIMEOUT)

    async def ping(self) -> None:
        """Run a trivial query within a few seconds."""
        async with asyncio.timeout(_PING_TIMEOUT):
            async with self._cursor() as cur:
                await cur.execute("SELECT 1")

    async def schema_version(self) -> int:
        """The highest applied migration."""
        async with self._cursor() as cur:
            await cur.execute("SELECT max(version) FROM schema_migrations")
            row = await cur.fetchone()
        return row[0] or 0

    async def _migrate(self) -> None:
        # The lock is per session: take it, migrate and release it on one connection.
        async with self._connection().acquire() as conn, conn.cursor() as cur:
            await cur.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})", (ADVISORY_LOCK_CLASS,))
            try:
                await cur.execute(MIGRATIONS_TABLE["postgres"])
                await cur.execute("SELECT version FROM schema_migrations")
                applied = {r[0] for r in await cur.fetchall()}
                for migration in pending(POSTGRES, applied, store="postgres"):
                    async with cur.begin():
                        for statement in migration.statements:
                            await cur.execute(statement)
                        await cur.execute(
                            "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                            (migration.version, migration.description),
                        )
                    log.info("store: postgres migration %d applied (%s)", migration.version, migration.description)
            finally:
                try:
                    await cur.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})", (ADVISORY_LOCK_CLASS,))
                except Exception as exc:
                    # A pooled session still holding the lock would block every other replica: end it.
                    log.warning("store: could not release the migration lock (%s); closing the session", exc)
                    await conn.close()

    def _connection(self) -> aiopg.Pool:
        if self._pool is None:
            raise RuntimeError("the postgres store is not open")
        return self._pool

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[aiopg.Cursor]:
        pool = self._connection()
        try:
            async with pool.acquire() as conn, conn.cursor() as cur:
                yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            # The server restarted or the network dropped: the idle connections are dead too. Dropping
            # them now makes the next call reconnect, instead of failing once per stale pooled connection.
            await pool.clear()
            raise

    async def _fetch(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._cursor() as cur:
            await cur.execute(pg(query), params)
            return list(await cur.fetchall())

    async def record_executions(self, rows: Sequence[ExecutionRow | Outcome | sql.Record]) -> None:
        """Upsert the batch in one transaction, one statement per chunk."""
        texts = [sql.json_rows(chunk) for chunk in _chunks(sql.records(rows), _CHUNK)]
        if not texts:
            return
        async with self._cursor() as cur:
            if len(texts) == 1:  # one statement is a transaction of its own: save BEGIN's and COMMIT's round trips
                await cur.execute(_INSERT, (texts[0],))
                return
            async with cur.begin():
                for text in texts:
                    await cur.execute(_INSERT, (text,))

    async def get_execution(self, id: str) -> ExecutionRow | None:
        """One execution with its steps."""
        records = await self._fetch(sql.SELECT_EXECUTION, (id,))
        return sql.execution_from(records[0], utc, _same) if records else None

    async def list_executions(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        before: str | None = None,
        workflow_type: str | None = None,
        error: str | None = None,
    ) -> tuple[list[ExecutionRow], str | None]:
        """One page, newest first, and the cursor of the next."""
        found = ExecutionFilter(pipeline, status, workflow_type, since, until, error)
        query, params, size = sql.page_query(found, before=before, limit=limit, ts=utc, error_text=_ERROR_TEXT)
        records = await self._fetch(query, params)
        rows = [sql.execution_from(r, utc, _same) for r in records[:size]]
        more = len(records) > size
        return rows, encode_cursor(rows[-1].started_at, rows[-1].id) if more else None

    async def prune_executions(self, older_than: datetime) -> int:
        """Delete old executions chunk by chunk, each chunk its own transaction."""
        total = 0
        async with self._cursor() as cur:
            while True:
                await cur.execute(pg(sql.PRUNE), (utc(older_than),))
                total += cur.rowcount
                if cur.rowcount < sql.PRUNE_CHUNK:
                    return total

    async def list_components(self, *, include_deleted: bool = False) -> list[ComponentRow]:
        """Components ordered by id."""
        query, params = sql.list_components(include_deleted)
        return [sql.component_from(r, utc) for r in await self._fetch(query, params)]

    async def component_versions(self) -> list[ComponentVersion]:
        """Versions ordered by id, deleted components too."""
        return [sql.version_from(r) for r in await self._fetch(sql.COMPONENT_VERSIONS)]

    async def get_component(self, id: str) -> ComponentRow | None:
        """One component, deleted or not."""
        records = await self._fetch(sql.SELECT_COMPONENT, (id,))
        return sql.component_from(records[0], utc) if records else None

    async def put_component(self, id: str, source: str, sha256: str, updated_by: str) -> ComponentRow:
        """Insert, or update with version + 1 (undeleting it), and add it to the history; one transaction."""
        row = await self._write(sql.PUT_COMPONENT, (id, source, sha256, _now(), updated_by, False))
        assert row is not None
        return row

    async def delete_component(self, id: str, deleted_by: str) -> ComponentRow | None:
        """Soft delete with version + 1, kept in the history too."""
        return await self._write(sql.DELETE_COMPONENT, (True, _now(), deleted_by, id, False))

    async def _write(self, query: str, params: Sequence[Any]) -> ComponentRow | None:
        """A component write and its history entry (pruning past HISTORY_KEPT) in one transaction."""
        async with self._cursor() as cur, cur.begin():
            await cur.execute(pg(query), params)
            records = list(await cur.fetchall())
            if not records:
                return None
            row = sql.component_from(records[0], utc)
            await cur.execute(pg(sql.INSERT_HISTORY), sql.history_params(row, row.updated_at))
            await cur.execute(pg(sql.PRUNE_HISTORY), (row.id, row.version - HISTORY_KEPT))
            return row

    async def component_history(self, id: str) -> list[HistoryRow]:
        """Stored versions, newest first."""
        return [sql.history_from(r, utc) for r in await self._fetch(sql.LIST_HISTORY, (id,))]

    async def component_version(self, id: str, version: int) -> HistoryRow | None:
        """One stored version with its source."""
        records = await self._fetch(sql.SELECT_HISTORY, (id, version))
        return sql.history_from(records[0], utc) if records else None

    async def report_replica(self, replica: str, components: Sequence[ReplicaComponent]) -> None:
        """Replace the replica's rows in one transaction."""
        rows = [[c.component, c.version, c.sha256, c.status, c.error] for c in components]
        async with self._cursor() as cur, cur.begin():
            await cur.execute(pg(sql.DELETE_REPLICA), (replica,))
            await cur.execute(_INSERT_REPLICAS, (replica, _now(), json.dumps(rows)))

    async def list_replicas(self, *, since: datetime) -> list[ReplicaComponent]:
        """Rows reported since `since`."""
        return [sql.replica_from(r, utc) for r in await self._fetch(sql.LIST_REPLICAS, (since,))]

    async def audit(
        self,
        who: str,
        action: str,
        target: str | None,
        client_address: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one audit entry."""
        async with self._cursor() as cur:
            # The JSON text is an untyped literal: PostgreSQL casts it to the JSONB column on insert.
            await cur.execute(pg(sql.INSERT_AUDIT), (_now(), who, action, target, client_address, dump_json(detail)))

    async def list_audit(
        self, *, limit: int = 100, target: str | None = None, who: str | None = None, before: int | None = None
    ) -> list[AuditRow]:
        """Newest audit entries first."""
        query, params = sql.list_audit(limit, target, who, before)
        return [sql.audit_from(r, utc, _same) for r in await self._fetch(query, params)]


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _same(value: Any) -> Any:
    # psycopg2 already decodes JSONB columns.
    return value


def _now() -> datetime:
    return datetime.now(UTC)
