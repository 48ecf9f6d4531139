"""Storage steps: `step.db_query` and `step.db_exec` on the server's database or a connection the config names.

The SQL is fixed when the config loads (a template in it is a config error); only `params` are templated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server import Register, StepContext, StepError, hookimpl
from server.databases import ConnectionSpec, DatabaseError, lookup_connection

from .sqltext import Statement, compile_statement

MODES = ("list", "single")
QUERY_KEYS = frozenset({"connection", "database", "query", "params", "mode"})
EXEC_KEYS = QUERY_KEYS - {"mode"}


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a db step needs at run time, fixed at config load."""

    connection: ConnectionSpec | None  # None: the server's own database
    statement: Statement
    single: bool = False


def _prepare(config: Mapping[str, Any], keys: frozenset[str], kind: str) -> Prepared:
    unknown = sorted(str(k) for k in config if k not in keys)
    if unknown:
        raise ValueError(f"{kind}: unknown key(s) {', '.join(map(repr, unknown))} (expected {', '.join(sorted(keys))})")
    query = config.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"{kind} needs a 'query' (SQL text)")
    if "{{" in query:
        raise ValueError(
            f"{kind}: the query must not contain templates ({{{{ ... }}}}); "
            "pass values through 'params' and placeholders"
        )
    if "connection" in config and "database" in config:
        raise ValueError(f"{kind}: give 'connection' or its alias 'database', not both")
    # `database` is the original engine's key for the same thing.
    name = config.get("connection", config.get("database"))
    if isinstance(name, str) and "{{" in name:
        raise ValueError(f"{kind}: the connection must be a name, not a template")
    mode = config.get("mode", "list")
    if mode not in MODES:
        raise ValueError(f"{kind}: mode {mode!r} is not one of {', '.join(MODES)}")
    return Prepared(lookup_connection(name), compile_statement(query, config.get("params")), mode == "single")


def prepare_query(config: Mapping[str, Any]) -> Prepared:
    """Check a `step.db_query` config and compile its SQL for both drivers."""
    return _prepare(config, QUERY_KEYS, "step.db_query")


def prepare_exec(config: Mapping[str, Any]) -> Prepared:
    """Check a `step.db_exec` config and compile its SQL for both drivers."""
    return _prepare(config, EXEC_KEYS, "step.db_exec")


async def db_query(ctx: StepContext) -> dict[str, Any]:
    """Run the query; output `rows` and `count` (mode list) or `row` (null when none) and `found` (mode single)."""
    prepared: Prepared = ctx.prepared
    connection, sql, args = await _statement(ctx)
    try:
        rows = await connection.fetch(sql, args, one=prepared.single)
    except DatabaseError as exc:
        raise _failed(ctx, exc) from None
    if prepared.single:
        return {"row": rows[0] if rows else None, "found": bool(rows)}
    return {"rows": rows, "count": len(rows)}


async def db_exec(ctx: StepContext) -> dict[str, Any]:
    """Run the statement; output `affected_rows`."""
    connection, sql, args = await _statement(ctx)
    try:
        return {"affected_rows": await connection.execute(sql, args)}
    except DatabaseError as exc:
        raise _failed(ctx, exc) from None


async def _statement(ctx: StepContext) -> tuple[Any, str, tuple[Any, ...]]:
    """The open connection, its dialect of the SQL, and the rendered params as arguments."""
    prepared: Prepared = ctx.prepared
    databases = getattr(ctx.services, "databases", None)
    if databases is None:
        raise StepError(f"step {ctx.step!r} ({ctx.type}): no database service (the server is not running)")
    try:
        connection = await databases.get(prepared.connection)
    except DatabaseError as exc:
        raise _failed(ctx, exc) from None
    args = tuple(_argument(value) for value in prepared.statement.arguments(ctx.config.get("params")))
    return connection, prepared.statement.text(connection.driver), args


def _argument(value: Any) -> Any:
    # Both drivers take the same values: a mapping or a list travels as JSON text (sqlite3 takes neither,
    # and psycopg2 would turn a list into an ARRAY).
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str)
    return value


def _failed(ctx: StepContext, exc: DatabaseError) -> StepError:
    # The pipeline logs the failure with this message; the response names the step and the connection.
    return StepError(f"step {ctx.step!r} ({ctx.type}) failed: {exc}", connection=exc.connection)


@hookimpl
def register_steps(register: Register) -> None:
    """The storage steps."""
    register(
        "step.db_query",
        db_query,
        prepare=prepare_query,
        outputs={
            "rows": {"type": "array", "required": False},
            "count": {"type": "integer", "required": False},
            "row": {"type": "any", "required": False},
            "found": {"type": "boolean", "required": False},
        },
    )
    register("step.db_exec", db_exec, prepare=prepare_exec, outputs={"affected_rows": "integer"})
