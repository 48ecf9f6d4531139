"""SQL shared by both dialects, written with `?` placeholders (the PostgreSQL store turns them into `%s`)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from .base import MAX_PAGE, AuditRow, ComponentRow, ExecutionRow, StepRow
from .codec import clean_text, decode_cursor, dump_json

EXECUTION_COLUMNS = "id, pipeline, workflow_type, status, started_at, duration_ms, error, result"
STEP_COLUMNS = "execution_id, name, type, status, duration_ms, error"
COMPONENT_COLUMNS = "id, source, sha256, version, updated_at, updated_by, deleted"
AUDIT_COLUMNS = "id, at, who, action, target, client_address, detail"

UPSERT_EXECUTION_TAIL = (
    " ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, workflow_type = excluded.workflow_type, "
    "status = excluded.status, started_at = excluded.started_at, duration_ms = excluded.duration_ms, "
    "error = excluded.error, result = excluded.result")

INSERT_STEP = ("INSERT INTO execution_steps (execution_id, position, name, type, status, duration_ms, error) "
               "VALUES ")

SELECT_EXECUTION = f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?"

# Chunked, so one prune never holds a long write lock (SQLite) or a huge transaction (PostgreSQL).
PRUNE_CHUNK = 5000
PRUNE = ("DELETE FROM executions WHERE id IN "
         f"(SELECT id FROM executions WHERE started_at < ? LIMIT {PRUNE_CHUNK})")

PUT_COMPONENT = (
    f"INSERT INTO components ({COMPONENT_COLUMNS}) VALUES (?, ?, ?, 1, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET source = excluded.source, sha256 = excluded.sha256, "
    "version = components.version + 1, updated_at = excluded.updated_at, updated_by = excluded.updated_by, "
    f"deleted = excluded.deleted RETURNING {COMPONENT_COLUMNS}")

# Parameters: (True, now, who, id, False) - booleans as parameters work in both dialects.
DELETE_COMPONENT = ("UPDATE components SET deleted = ?, version = version + 1, updated_at = ?, updated_by = ? "
                    f"WHERE id = ? AND deleted = ? RETURNING {COMPONENT_COLUMNS}")

SELECT_COMPONENT = f"SELECT {COMPONENT_COLUMNS} FROM components WHERE id = ?"


def list_components(include_deleted: bool) -> tuple[str, list[Any]]:
    """The query listing components ordered by id, and its parameters."""
    if include_deleted:
        return f"SELECT {COMPONENT_COLUMNS} FROM components ORDER BY id", []
    return f"SELECT {COMPONENT_COLUMNS} FROM components WHERE deleted = ? ORDER BY id", [False]


INSERT_AUDIT = "INSERT INTO audit_log (at, who, action, target, client_address, detail) VALUES (?, ?, ?, ?, ?, ?)"


def list_audit(limit: int, target: str | None) -> tuple[str, list[Any]]:
    """The query listing audit entries newest first, and its parameters."""
    where, params = ("", []) if target is None else (" WHERE target = ?", [target])
    return f"SELECT {AUDIT_COLUMNS} FROM audit_log{where} ORDER BY id DESC LIMIT ?", [*params, max(1, limit)]


def page_query(*, pipeline: str | None, status: str | None, since: datetime | None, until: datetime | None,
               before: str | None, limit: int, ts: Callable[[datetime], Any]) -> tuple[str, list[Any], int]:
    """The query for one page of executions, its parameters, and the clamped page size.

    It asks for one row more than the page holds, to know whether a next page exists; `ts`
    turns a datetime into the dialect's parameter.
    """
    size = max(1, min(limit, MAX_PAGE))
    where: list[str] = []
    params: list[Any] = []
    if pipeline is not None:
        where.append("pipeline = ?")
        params.append(pipeline)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if since is not None:
        where.append("started_at >= ?")
        params.append(ts(since))
    if until is not None:
        where.append("started_at < ?")
        params.append(ts(until))
    if before is not None:
        at, id = decode_cursor(before)
        # Row comparison follows the (started_at DESC, id DESC) index exactly: no gaps, no repeats on ties.
        where.append("(started_at, id) < (?, ?)")
        params += [ts(at), id]
    clause = " WHERE " + " AND ".join(where) if where else ""
    sql = f"SELECT {EXECUTION_COLUMNS} FROM executions{clause} ORDER BY started_at DESC, id DESC LIMIT ?"
    return sql, [*params, size + 1], size


def unique(rows: Sequence[ExecutionRow]) -> list[ExecutionRow]:
    """The batch with one row per id, the last one winning (one statement cannot update a row twice)."""
    if len({row.id for row in rows}) == len(rows):
        return list(rows)
    return list({row.id: row for row in rows}.values())


def execution_values(row: ExecutionRow, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """The parameters of one execution row, in EXECUTION_COLUMNS order, cleaned for either database."""
    return (clean_text(row.id), clean_text(row.pipeline), clean_text(row.workflow_type), clean_text(row.status),
            ts(row.started_at), _finite(row.duration_ms), dump_json(row.error), dump_json(row.result))


def step_values(row: ExecutionRow) -> list[tuple[Any, ...]]:
    """The parameters of each step of an execution, in INSERT_STEP order."""
    id = clean_text(row.id)
    return [(id, position, clean_text(s.name), clean_text(s.type), clean_text(s.status), _finite(s.duration_ms),
             None if s.error is None else clean_text(s.error)) for position, s in enumerate(row.steps)]


def group_steps(records: Iterable[Sequence[Any]]) -> dict[str, tuple[StepRow, ...]]:
    """Step records (STEP_COLUMNS, ordered by execution then position) grouped by execution id."""
    grouped: dict[str, list[StepRow]] = {}
    for r in records:
        grouped.setdefault(r[0], []).append(StepRow(r[1], r[2], r[3], r[4], r[5]))
    return {id: tuple(steps) for id, steps in grouped.items()}


def execution_from(r: Sequence[Any], steps: dict[str, tuple[StepRow, ...]], read_ts: Callable[[Any], datetime],
                   read_json: Callable[[Any], Any]) -> ExecutionRow:
    """An ExecutionRow from a record in EXECUTION_COLUMNS order and the grouped steps."""
    return ExecutionRow(r[0], r[1], r[2], r[3], read_ts(r[4]), r[5], read_json(r[6]), read_json(r[7]),
                        steps.get(r[0], ()))


def component_from(r: Sequence[Any], read_ts: Callable[[Any], datetime]) -> ComponentRow:
    """A ComponentRow from a record in COMPONENT_COLUMNS order."""
    return ComponentRow(r[0], r[1], r[2], r[3], read_ts(r[4]), r[5], bool(r[6]))


def audit_from(r: Sequence[Any], read_ts: Callable[[Any], datetime], read_json: Callable[[Any], Any]) -> AuditRow:
    """An AuditRow from a record in AUDIT_COLUMNS order."""
    return AuditRow(r[0], read_ts(r[1]), r[2], r[3], r[4], r[5], read_json(r[6]))


def _finite(value: float) -> float:
    # SQLite stores NaN as NULL (refused by NOT NULL): a duration that is not a number records as 0.
    value = float(value)
    return value if math.isfinite(value) else 0.0
