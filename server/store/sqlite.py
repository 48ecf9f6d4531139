"""The embedded store: one SQLite file (WAL mode) through a single aiosqlite connection."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

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
from .codec import dump_json, encode_cursor, load_json, ts_parse, ts_text
from .migrations import MIGRATIONS_TABLE, SQLITE, pending

if TYPE_CHECKING:
    from ..engine.executor import Outcome

log = logging.getLogger("workflow.store")

# Rows per INSERT statement: sqlite3 releases and retakes the GIL around every statement step, and on a
# busy server each of those hand-overs between the event loop and aiosqlite's thread costs more than the row
# itself (executemany, one step per row, cost the server a quarter more CPU per recorded execution than this).
# As many rows as fit in the 999 parameters that SQLite before 3.32 allows (111 rows of 9 columns); derived
# from the record, so a column added to it keeps the statement valid.
_ROWS_PER_INSERT = 999 // len(sql.Record._fields)
# Rows per transaction: SQLite has one writer, and the queue's enqueues (a chat event waiting for its
# acknowledgement) wait for the recorder's transaction in progress. With recorder batches of 2000 random-id
# rows written back to back (bench_enqueue.py), enqueue p99 was 72 ms in one transaction per batch and 41 ms
# in transactions of 500 rows; at a realistic 2000 executions/s it is under 10 ms either way. A whole number of
# statements per transaction.
_ROWS_PER_TRANSACTION = 4 * _ROWS_PER_INSERT
# Random ids put nearly every row of a batch in another page of the id index; the default 2 MB cache
# spills those pages mid-transaction and reads them back (at 100k rows, 16 MB makes a third fewer I/O calls).
_CACHE_KIB = 16384
# The same index pages are rewritten by batch after batch: checkpointing every 10000 WAL pages (~40 MB of
# WAL, instead of every 1000) copies each of them to the database once per checkpoint, not once per batch.
_CHECKPOINT_PAGES = 10000
# Random execution ids put every row of a batch in another page of the id index, and WAL writes each such
# page whole: with 16 KiB pages there are fewer, fuller pages to touch. Measured with bench_recording.py at
# 200k rows: 21.2 us CPU per execution with 4 KiB pages, 17.4 us with 16 KiB (1 KiB: 27.9 us). It applies to
# new database files only (an existing one keeps its page size).
_PAGE_BYTES = 16384
_WAL_ATTEMPTS = 200  # 10 s at 50 ms, as long as busy_timeout


class SqliteStore(Store):
    """SQLite at `path`; every operation is serialised on one connection (SQLite has one writer anyway)."""

    kind = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        # One connection: two coroutines must never interleave statements of their transactions.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Create the folder and file if needed, switch to WAL, and apply pending migrations."""
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so their extent is visible here.
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            # busy_timeout first: another process (or store) may hold the write lock while migrating.
            await db.execute("PRAGMA busy_timeout = 10000")
            await db.execute(f"PRAGMA page_size = {_PAGE_BYTES}")  # before WAL, which fixes it
            await _enable_wal(db)
            # NORMAL in WAL mode survives a process crash; only an OS crash can lose the last commits.
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
            await db.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            self._db = db
            await self._migrate()
        except BaseException:
            self._db = None
            await db.close()
            raise
        log.info("store: sqlite at %s", self.path)

    async def close(self) -> None:
        """Close the connection once no operation is using it."""
        async with self._lock:
            if self._db is not None:
                db, self._db = self._db, None
                await db.close()

    async def ping(self) -> None:
        """Run a trivial query."""
        async with self._read() as db:
            await db.execute_fetchall("SELECT 1")

    async def schema_version(self) -> int:
        """The highest applied migration."""
        async with self._read() as db:
            rows = list(await db.execute_fetchall("SELECT max(version) FROM schema_migrations"))
        return rows[0][0] or 0

    async def _migrate(self) -> None:
        # BEGIN IMMEDIATE takes the write lock first: two processes opening one file migrate in turn.
        async with self._write() as db:
            await db.execute(MIGRATIONS_TABLE["sqlite"])
            applied = {r[0] for r in await db.execute_fetchall("SELECT version FROM schema_migrations")}
            for migration in pending(SQLITE, applied, store="sqlite"):
                for statement in migration.statements:
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.description, ts_text(_now())),
                )
                log.info("store: sqlite migration %d applied (%s)", migration.version, migration.description)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield self._connection()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self._connection()
            try:
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed (busy): a transaction left open would break every later BEGIN.
                await _rollback(db)
                raise

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the sqlite store is not open")
        return self._db

    async def record_executions(self, rows: Sequence[ExecutionRow | Outcome | sql.Record]) -> None:
        """Upsert the batch, many rows per statement, a few statements per transaction (rows are upserts, so a
        batch retried after a failure part-way writes its committed rows again harmlessly)."""
        batch = sql.records(rows)
        for first in range(0, len(batch), _ROWS_PER_TRANSACTION):
            async with self._write() as db:
                for start in range(first, min(first + _ROWS_PER_TRANSACTION, len(batch)), _ROWS_PER_INSERT):
                    chunk = batch[start : start + _ROWS_PER_INSERT]
                    await db.execute(_insert(len(chunk)), list(chain.from_iterable(chunk)))

    async def get_execution(self, id: str) -> ExecutionRow | None:
        """One execution with its steps."""
        async with self._read() as db:
            records = list(await db.execute_fetchall(sql.SELECT_EXECUTION, (id,)))
        return sql.execution_from(records[0], ts_parse, load_json) if records else None

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
        query, params, size = sql.page_query(found, before=before, limit=limit, ts=ts_text, error_text=_ERROR_TEXT)
        async with self._read() as db:
            records = list(await db.execute_fetchall(query, params))
        rows = [sql.execution_from(r, ts_parse, load_json) for r in records[:size]]
        more = len(records) > size
        return rows, encode_cursor(rows[-1].started_at, rows[-1].id) if more else None

    async def prune_executions(self, older_than: datetime) -> int:
        """Delete old executions chunk by chunk, each chunk its own transaction."""
        total = 0
        while True:
            async with self._write() as db, db.execute(sql.PRUNE, (ts_text(older_than),)) as cursor:
                count = cursor.rowcount
            total += count
            if count < sql.PRUNE_CHUNK:
                return total

    async def list_components(self, *, include_deleted: bool = False) -> list[ComponentRow]:
        """Components ordered by id."""
        query, params = sql.list_components(include_deleted)
        async with self._read() as db:
            records = await db.execute_fetchall(query, params)
        return [sql.component_from(r, ts_parse) for r in records]

    async def component_versions(self) -> list[ComponentVersion]:
        """Versions ordered by id, deleted components too."""
        async with self._read() as db:
            records = await db.execute_fetchall(sql.COMPONENT_VERSIONS)
        return [sql.version_from(r) for r in records]

    async def get_component(self, id: str) -> ComponentRow | None:
        """One component, deleted or not."""
        async with self._read() as db:
            records = list(await db.execute_fetchall(sql.SELECT_COMPONENT, (id,)))
        return sql.component_from(records[0], ts_parse) if records else None

    async def put_component(self, id: str, source: str, sha256: str, updated_by: str) -> ComponentRow:
        """Insert, or update with version + 1 (undeleting it), and add the version to the history."""
        at = ts_text(_now())
        async with self._write() as db:
            records = list(await db.execute_fetchall(sql.PUT_COMPONENT, (id, source, sha256, at, updated_by, False)))
            row = sql.component_from(records[0], ts_parse)
            await _remember(db, row, at)
        return row

    async def delete_component(self, id: str, deleted_by: str) -> ComponentRow | None:
        """Soft delete with version + 1, kept in the history too."""
        at = ts_text(_now())
        async with self._write() as db:
            records = list(await db.execute_fetchall(sql.DELETE_COMPONENT, (True, at, deleted_by, id, False)))
            if not records:
                return None
            row = sql.component_from(records[0], ts_parse)
            await _remember(db, row, at)
        return row

    async def component_history(self, id: str) -> list[HistoryRow]:
        """Stored versions, newest first."""
        async with self._read() as db:
            records = await db.execute_fetchall(sql.LIST_HISTORY, (id,))
        return [sql.history_from(r, ts_parse) for r in records]

    async def component_version(self, id: str, version: int) -> HistoryRow | None:
        """One stored version with its source."""
        async with self._read() as db:
            records = list(await db.execute_fetchall(sql.SELECT_HISTORY, (id, version)))
        return sql.history_from(records[0], ts_parse) if records else None

    async def report_replica(self, replica: str, components: Sequence[ReplicaComponent]) -> None:
        """Replace the replica's rows in one transaction."""
        at = ts_text(_now())
        async with self._write() as db:
            await db.execute(sql.DELETE_REPLICA, (replica,))
            await db.executemany(sql.INSERT_REPLICA, [sql.replica_params(replica, c, at) for c in components])

    async def list_replicas(self, *, since: datetime) -> list[ReplicaComponent]:
        """Rows reported since `since`."""
        async with self._read() as db:
            records = await db.execute_fetchall(sql.LIST_REPLICAS, (ts_text(since),))
        return [sql.replica_from(r, ts_parse) for r in records]

    async def audit(
        self,
        who: str,
        action: str,
        target: str | None,
        client_address: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one audit entry."""
        async with self._write() as db:
            await db.execute(
                sql.INSERT_AUDIT, (ts_text(_now()), who, action, target, client_address, dump_json(detail))
            )

    async def list_audit(
        self, *, limit: int = 100, target: str | None = None, who: str | None = None, before: int | None = None
    ) -> list[AuditRow]:
        """Newest audit entries first."""
        query, params = sql.list_audit(limit, target, who, before)
        async with self._read() as db:
            records = await db.execute_fetchall(query, params)
        return [sql.audit_from(r, ts_parse, load_json) for r in records]


# The error's message, matched case-insensitively (ASCII) by LIKE.
_ERROR_TEXT = "json_extract(error, '$.error') LIKE ? ESCAPE '\\'"


async def _remember(db: aiosqlite.Connection, row: ComponentRow, at: str) -> None:
    """Add `row` to the history and prune what is past HISTORY_KEPT, in the caller's transaction."""
    await db.execute(sql.INSERT_HISTORY, sql.history_params(row, at))
    await db.execute(sql.PRUNE_HISTORY, (row.id, row.version - HISTORY_KEPT))


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert(rows: int) -> str:
    """The upsert of `rows` executions in one statement."""
    values = ", ".join(["(" + ", ".join(["?"] * len(sql.Record._fields)) + ")"] * rows)
    return f"INSERT INTO executions ({sql.EXECUTION_COLUMNS}) VALUES {values}{sql.UPSERT_EXECUTION_TAIL}"


async def _enable_wal(db: aiosqlite.Connection) -> None:
    # Switching to WAL needs an exclusive lock and SQLite does not wait for it (the busy handler is not
    # used): another connection opening the file at that moment makes it fail at once, so retry briefly.
    records: list[Any] = []
    for attempt in range(_WAL_ATTEMPTS):
        try:
            records = list(await db.execute_fetchall("PRAGMA journal_mode = WAL"))
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05)
    if records[0][0].lower() != "wal":
        log.warning("store: sqlite journal mode is %s, not wal: readers may wait for writers", records[0][0])


async def _rollback(db: aiosqlite.Connection) -> None:
    """Roll back what the connection's worker thread has begun by now; sqlite errors are not raised."""
    # Unconditional, not `if db.in_transaction`: a cancelled `await` does not stop the worker, which still
    # runs the BEGIN or COMMIT it was given. ROLLBACK is queued behind it, so it undoes a BEGIN that ran after
    # the cancellation, and fails harmlessly ("no transaction is active") after a COMMIT or a failed BEGIN;
    # that error must not replace the original exception (a CancelledError above all).
    with suppress(sqlite3.Error):
        await db.execute("ROLLBACK")


def _now() -> datetime:
    return datetime.now(UTC)
