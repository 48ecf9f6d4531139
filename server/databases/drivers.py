"""One connection per spec: an aiopg pool for PostgreSQL or one aiosqlite connection, rows as JSON-friendly dicts."""

from __future__ import annotations

import abc
import asyncio
import base64
import datetime as dt
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from .pools import close_pool
from .specs import ConnectionSpec

if TYPE_CHECKING:
    import aiopg

Row = dict[str, Any]
T = TypeVar("T")
_BUSY_TIMEOUT_MS = 5000  # the store's writer holds the SQLite file's write lock for one batch at a time
_CLOSE_TIMEOUT = 5.0


class DatabaseError(Exception):
    """A statement or a connection failed; the message names the connection, never its DSN."""

    def __init__(self, connection: str, message: str) -> None:
        super().__init__(f"connection {connection!r}: {message}")
        self.connection = connection


class Connection(abc.ABC):
    """What a step uses: `fetch` rows, or `execute` and count them; `driver` picks the SQL dialect."""

    driver: str = ""

    def __init__(self, spec: ConnectionSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; DatabaseError when that fails."""

    @abc.abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any], *, one: bool = False) -> list[Row]:
        """The rows of a query (at most one when `one`), with JSON-friendly values."""

    @abc.abstractmethod
    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        """Run a statement; return the number of rows it changed (0 when that does not apply)."""

    async def close(self) -> None:  # noqa: B027 - a default that does nothing, not an abstract method
        """Release the connection or pool."""

    def _error(self, exc: BaseException) -> DatabaseError:
        text = str(exc).strip().splitlines()
        return DatabaseError(self.spec.name, f"{type(exc).__name__}: {text[0] if text else 'failed'}")


async def open_connection(spec: ConnectionSpec) -> Connection:
    """Connect to `spec`'s database; DatabaseError when that fails."""
    connection: Connection = PostgresConnection(spec) if spec.driver == "postgres" else SqliteConnection(spec)
    await connection.open()
    return connection


# --------------------------------------------------------------------------- SQLite


class SqliteConnection(Connection):
    """One aiosqlite connection in autocommit mode, separate from the store's, one statement at a time."""

    driver = "sqlite"

    def __init__(self, spec: ConnectionSpec) -> None:
        super().__init__(spec)
        self._db: aiosqlite.Connection | None = None
        # One statement at a time, so an interrupt on cancellation can only stop the statement of its own step.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Open the file (creating its folder) with a busy timeout, since other writers share it."""
        try:
            if self.spec.path != ":memory:":
                Path(self.spec.path).parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self.spec.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from None
        try:
            await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA foreign_keys = ON")
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from None
            raise
        self._db = db

    async def fetch(self, sql: str, args: Sequence[Any], *, one: bool = False) -> list[Row]:
        """The rows of a query."""
        names, records = await self._run(self._fetch, sql, args, one)
        return [{k: json_value(v) for k, v in zip(names, record, strict=True)} for record in records]

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        """Run a statement; its changed-row count."""
        return await self._run(self._execute, sql, args, False)

    async def close(self) -> None:
        """Close the connection once no statement uses it."""
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def _run(
        self,
        action: Callable[[aiosqlite.Connection, str, Sequence[Any], bool], Awaitable[T]],
        sql: str,
        args: Sequence[Any],
        one: bool,
    ) -> T:
        async with self._lock:
            if self._db is None:
                raise DatabaseError(self.spec.name, "the connection is closed")
            try:
                return await action(self._db, sql, args, one)
            except asyncio.CancelledError:
                # The step timed out: the worker thread would finish the statement anyway, holding the lock.
                await self._db.interrupt()
                raise
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    @staticmethod
    async def _fetch(db: aiosqlite.Connection, sql: str, args: Sequence[Any], one: bool) -> tuple[list[str], list[Any]]:
        async with db.execute(sql, args) as cursor:
            records = [await cursor.fetchone()] if one else list(await cursor.fetchall())
            return [d[0] for d in cursor.description or ()], [r for r in records if r is not None]

    @staticmethod
    async def _execute(db: aiosqlite.Connection, sql: str, args: Sequence[Any], _one: bool) -> int:
        async with db.execute(sql, args) as cursor:
            await cursor.fetchall()  # a RETURNING clause's rows: the count is final once they are read
            return max(cursor.rowcount, 0)


# --------------------------------------------------------------------------- PostgreSQL


class PostgresConnection(Connection):
    """A small aiopg pool of its own, so steps never queue behind (or block) the store's connections."""

    driver = "postgres"

    def __init__(self, spec: ConnectionSpec) -> None:
        super().__init__(spec)
        self._pool: aiopg.Pool | None = None

    async def open(self) -> None:
        """Create the pool with one connection, so a bad DSN fails here with its reason."""
        import aiopg  # psycopg2 loads only when a PostgreSQL connection is used
        import psycopg2

        # Without a connect timeout, a black-holed host would stall each step until its own timeout.
        dsn = self.spec.dsn if "connect_timeout" in self.spec.dsn else _with_connect_timeout(self.spec.dsn)
        try:
            self._pool = await aiopg.create_pool(dsn, minsize=1, maxsize=self.spec.pool_size, enable_hstore=False)
        except (OSError, psycopg2.Error) as exc:
            raise self._error(exc) from None

    async def fetch(self, sql: str, args: Sequence[Any], *, one: bool = False) -> list[Row]:
        """The rows of a query."""

        async def action(cur: aiopg.Cursor) -> list[Row]:
            await cur.execute(sql, tuple(args))
            if cur.description is None:  # a statement without a result set
                return []
            names = [column.name for column in cur.description]
            records = [await cur.fetchone()] if one else await cur.fetchall()
            return [
                {k: json_value(v) for k, v in zip(names, record, strict=True)}
                for record in records
                if record is not None
            ]

        return await self._run(action)

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        """Run a statement; its changed-row count."""

        async def action(cur: aiopg.Cursor) -> int:
            await cur.execute(sql, tuple(args))
            return max(cur.rowcount, 0)

        return await self._run(action)

    async def close(self) -> None:
        """Close the pool, waiting a bounded time for connections in use."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool, _CLOSE_TIMEOUT)

    async def _run(self, action: Callable[[aiopg.Cursor], Awaitable[T]]) -> T:
        import psycopg2

        pool = self._pool
        if pool is None:
            raise DatabaseError(self.spec.name, "the connection is closed")
        try:
            # aiopg connections are autocommit: each statement is its own transaction. On cancellation
            # (the step's timeout) aiopg closes the connection, and the pool drops it.
            async with pool.acquire() as conn, conn.cursor() as cur:
                return await action(cur)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # a real cancellation: the step's timeout, a client that left, or shutdown
            # aiopg turns a cancel by the server (statement_timeout, pg_cancel_backend) into CancelledError,
            # which would otherwise end the whole request as if the client had gone.
            raise DatabaseError(
                self.spec.name,
                "QueryCanceled: the database cancelled the statement (statement timeout or a cancel request)",
            ) from None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            # The server restarted or the network dropped: the idle connections are dead too.
            await pool.clear()
            raise self._error(exc) from None
        except (OSError, psycopg2.Error) as exc:
            raise self._error(exc) from None


def _with_connect_timeout(dsn: str) -> str:
    if "://" in dsn:  # a URL: add it as a query parameter
        return dsn + ("&" if "?" in dsn else "?") + "connect_timeout=10"
    return f"{dsn} connect_timeout=10"


# --------------------------------------------------------------------------- values


def json_value(value: Any) -> Any:
    """`value` as JSON can carry it: times as ISO text, decimals as numbers, bytes as text or base64."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        # Whole decimals (SUM of integers is NUMERIC in PostgreSQL) stay exact as int.
        return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)  # ranges, network addresses and other driver types: their text form
