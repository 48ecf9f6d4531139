"""SQL shared by both dialects, written with `?` placeholders (the PostgreSQL store turns them into `%s`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote
from typing import TYPE_CHECKING, Any, NamedTuple

from .base import (
    MAX_PAGE,
    AuditRow,
    ComponentRow,
    ComponentVersion,
    ExecutionFilter,
    ExecutionRow,
    HistoryRow,
    ReplicaComponent,
    StepRow,
    origin_of,
)
from .codec import clean_text, decode_cursor, dump_json, dump_json_array, ts_text

if TYPE_CHECKING:
    from ..engine.executor import Outcome
    from .detail import DetailPolicy

# `steps` holds a JSON array with one [name, type, status, duration_ms, error] array per step, in the
# order they ran: recording writes one row per execution, not one more per step.
EXECUTION_COLUMNS = "id, pipeline, workflow_type, status, started_at, duration_ms, error, result, steps, detail"
COMPONENT_COLUMNS = "id, source, sha256, version, updated_at, updated_by, deleted"
AUDIT_COLUMNS = "id, at, who, action, target, client_address, detail"

UPSERT_EXECUTION_TAIL = (
    " ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, workflow_type = excluded.workflow_type, "
    "status = excluded.status, started_at = excluded.started_at, duration_ms = excluded.duration_ms, "
    "error = excluded.error, result = excluded.result, steps = excluded.steps, detail = excluded.detail"
)

SELECT_EXECUTION = f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?"

# Chunked, so one prune never holds a long write lock (SQLite) or a huge transaction (PostgreSQL).
PRUNE_CHUNK = 5000
PRUNE = f"DELETE FROM executions WHERE id IN (SELECT id FROM executions WHERE started_at < ? LIMIT {PRUNE_CHUNK})"

PUT_COMPONENT = (
    f"INSERT INTO components ({COMPONENT_COLUMNS}) VALUES (?, ?, ?, 1, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET source = excluded.source, sha256 = excluded.sha256, "
    "version = components.version + 1, updated_at = excluded.updated_at, updated_by = excluded.updated_by, "
    f"deleted = excluded.deleted RETURNING {COMPONENT_COLUMNS}"
)

# Parameters: (True, now, who, id, False) - booleans as parameters work in both dialects.
DELETE_COMPONENT = (
    "UPDATE components SET deleted = ?, version = version + 1, updated_at = ?, updated_by = ? "
    f"WHERE id = ? AND deleted = ? RETURNING {COMPONENT_COLUMNS}"
)

SELECT_COMPONENT = f"SELECT {COMPONENT_COLUMNS} FROM components WHERE id = ?"
COMPONENT_VERSIONS = "SELECT id, sha256, version, deleted FROM components ORDER BY id"


def list_components(include_deleted: bool) -> tuple[str, list[Any]]:
    """The query listing components ordered by id, and its parameters."""
    if include_deleted:
        return f"SELECT {COMPONENT_COLUMNS} FROM components ORDER BY id", []
    return f"SELECT {COMPONENT_COLUMNS} FROM components WHERE deleted = ? ORDER BY id", [False]


REPLICA_COLUMNS = "replica, component, version, sha256, status, error, reported_at"
DELETE_REPLICA = "DELETE FROM replica_components WHERE replica = ?"
INSERT_REPLICA = f"INSERT INTO replica_components ({REPLICA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
LIST_REPLICAS = f"SELECT {REPLICA_COLUMNS} FROM replica_components WHERE reported_at >= ? ORDER BY component, replica"

INSERT_AUDIT = "INSERT INTO audit_log (at, who, action, target, client_address, detail) VALUES (?, ?, ?, ?, ?, ?)"

HISTORY_COLUMNS = "id, version, sha256, at, who, origin, deleted"
INSERT_HISTORY = (
    "INSERT INTO component_versions (id, version, sha256, source, at, who, origin, deleted) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id, version) DO NOTHING"
)
PRUNE_HISTORY = "DELETE FROM component_versions WHERE id = ? AND version <= ?"
LIST_HISTORY = f"SELECT {HISTORY_COLUMNS} FROM component_versions WHERE id = ? ORDER BY version DESC"
SELECT_HISTORY = f"SELECT {HISTORY_COLUMNS}, source FROM component_versions WHERE id = ? AND version = ?"


def history_params(row: ComponentRow, at: Any) -> tuple[Any, ...]:
    """INSERT_HISTORY's parameters for the component row just written."""
    return (row.id, row.version, row.sha256, row.source, at, row.updated_by, origin_of(row.updated_by), row.deleted)


def history_from(r: Sequence[Any], read_ts: Callable[[Any], datetime]) -> HistoryRow:
    """A HistoryRow from a record in HISTORY_COLUMNS order (and the source, when selected)."""
    return HistoryRow(r[0], r[1], r[2], read_ts(r[3]), r[4], r[5], bool(r[6]), r[7] if len(r) > 7 else None)


def list_audit(limit: int, target: str | None, who: str | None, before: int | None) -> tuple[str, list[Any]]:
    """The query listing audit entries newest first, and its parameters."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (("target = ?", target), ("who = ?", who), ("id < ?", before)):
        if value is not None:
            where.append(clause)
            params.append(value)
    clause = " WHERE " + " AND ".join(where) if where else ""
    return f"SELECT {AUDIT_COLUMNS} FROM audit_log{clause} ORDER BY id DESC LIMIT ?", [*params, max(1, limit)]


def page_query(
    found: ExecutionFilter,
    *,
    before: str | None,
    limit: int,
    ts: Callable[[datetime], Any],
    error_text: str,
) -> tuple[str, list[Any], int]:
    """The query for one page of executions, its parameters, and the clamped page size.

    It asks for one row more than the page holds, to know whether a next page exists; `ts`
    turns a datetime into the dialect's parameter, and `error_text` is the dialect's
    case-insensitive match of the error's JSON text against a `?` pattern.
    """
    size = max(1, min(limit, MAX_PAGE))
    where: list[str] = []
    params: list[Any] = []
    pipeline, status, since, until = found.pipeline, found.status, found.since, found.until
    for clause, value in (
        ("pipeline = ?", pipeline),
        ("status = ?", status),
        ("workflow_type = ?", found.workflow_type),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    if found.error:
        where.append(error_text)
        params.append("%" + found.error.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
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


class Record(NamedTuple):
    """One execution ready to write, in EXECUTION_COLUMNS order: cleaned text, numbers and JSON text only."""

    id: str
    pipeline: str
    workflow_type: str
    status: str
    started_at: str  # ts_text
    duration_ms: float
    error: str | None
    result: str | None
    steps: str
    detail: str | None = None


def records(items: Sequence[ExecutionRow | Outcome | Record]) -> list[Record]:
    """The batch as records, one per id with the last one winning (one statement cannot update a row twice)."""
    batch = [prepare(item) for item in items]
    if len({r.id for r in batch}) < len(batch):
        batch = list({r.id: r for r in batch}.values())
    return batch


def prepare(item: ExecutionRow | Outcome | Record, details: DetailPolicy | None = None) -> Record:
    """The record to write for a row or a finished outcome; never raises for odd values (see dump_json).

    An outcome's detail (payload, outputs, component versions) is kept only with a `details` policy.
    """
    if isinstance(item, Record):
        return item
    if isinstance(item, ExecutionRow):
        id, pipeline, workflow_type, status = item.id, item.pipeline, item.workflow_type, item.status
        started, duration, error, result = ts_text(item.started_at), item.duration_ms, item.error, item.result
        steps = [[s.name, s.type, s.status, s.duration_ms, s.error] for s in item.steps]
        detail = dump_json(item.detail)
    else:  # an Outcome, read in one pass as execution_row reads it, without building the ExecutionRow
        id, pipeline, workflow_type, status = item.execution_id, item.pipeline, item.workflow_type, item.status
        started, duration = _stamp(item.started_at), item.duration * 1000
        failure = item.error
        error, result = (None, item.result) if failure is None else (failure.to_json(), None)
        steps = [[s.name, s.type, s.status, s.duration * 1000, s.error] for s in item.steps]
        detail = details.encode(item) if details is not None else None
    # One test over the four short texts: they hardly ever need cleaning.
    joined = id + pipeline + workflow_type + status
    if "\x00" in joined or not joined.isascii():
        id, pipeline, workflow_type, status = map(clean_text, (id, pipeline, workflow_type, status))
    return Record(
        id,
        pipeline,
        workflow_type,
        status,
        started,
        _finite(duration),
        dump_json(error),
        dump_json(result),
        dump_json_array(steps),
        detail,
    )


def json_rows(batch: Sequence[Record]) -> str:
    """Records as one JSON array of arrays in EXECUTION_COLUMNS order, their JSON columns embedded as is."""
    return (
        "["
        + ",".join(
            [
                f"[{_quote(r.id)},{_quote(r.pipeline)},{_quote(r.workflow_type)},{_quote(r.status)},"
                f'"{r.started_at}",{r.duration_ms!r},{r.error or "null"},{r.result or "null"},{r.steps},'
                f"{r.detail or 'null'}]"
                for r in batch
            ]
        )
        + "]"
    )


def execution_from(
    r: Sequence[Any], read_ts: Callable[[Any], datetime], read_json: Callable[[Any], Any]
) -> ExecutionRow:
    """An ExecutionRow from a record in EXECUTION_COLUMNS order."""
    # A duration JSON could not hold was stored as null: it reads as 0, like the execution's own.
    steps = tuple(StepRow(s[0], s[1], s[2], 0.0 if s[3] is None else s[3], s[4]) for s in read_json(r[8]) or ())
    return ExecutionRow(
        r[0], r[1], r[2], r[3], read_ts(r[4]), r[5], read_json(r[6]), read_json(r[7]), steps, read_json(r[9])
    )


def version_from(r: Sequence[Any]) -> ComponentVersion:
    """A ComponentVersion from a record of COMPONENT_VERSIONS."""
    return ComponentVersion(r[0], r[1], r[2], bool(r[3]))


def component_from(r: Sequence[Any], read_ts: Callable[[Any], datetime]) -> ComponentRow:
    """A ComponentRow from a record in COMPONENT_COLUMNS order."""
    return ComponentRow(r[0], r[1], r[2], r[3], read_ts(r[4]), r[5], bool(r[6]))


def replica_params(replica: str, c: ReplicaComponent, at: Any) -> tuple[Any, ...]:
    """INSERT_REPLICA's parameters for one reported component."""
    return (replica, c.component, c.version, c.sha256, c.status, c.error, at)


def replica_from(r: Sequence[Any], read_ts: Callable[[Any], datetime]) -> ReplicaComponent:
    """A ReplicaComponent from a record in REPLICA_COLUMNS order."""
    return ReplicaComponent(r[0], r[1], r[2], r[3], r[4], r[5], read_ts(r[6]))


def audit_from(r: Sequence[Any], read_ts: Callable[[Any], datetime], read_json: Callable[[Any], Any]) -> AuditRow:
    """An AuditRow from a record in AUDIT_COLUMNS order."""
    return AuditRow(r[0], read_ts(r[1]), r[2], r[3], r[4], r[5], read_json(r[6]))


# The executor's own stamp (pipeline._utc_now), which needs no parsing to become ts_text.
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)


def _stamp(started_at: str) -> str:
    """An Outcome's `started_at` as ts_text; now when it was never stamped."""
    if _STAMP.fullmatch(started_at):
        return started_at
    try:
        return ts_text(datetime.fromisoformat(started_at))
    except ValueError:
        return ts_text(datetime.now(UTC))


def _finite(value: float) -> float:
    # SQLite stores NaN as NULL (refused by NOT NULL): a duration that is not a number records as 0.
    value = float(value)
    return value if math.isfinite(value) else 0.0
