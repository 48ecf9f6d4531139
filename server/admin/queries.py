"""Admin API reads: recorded executions (filtered, paginated) and the pipelines in service."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..errors import BadRequest, NotFound, clip
from ..http.middleware import json_response
from ..keys import ENGINE, STORE
from ..store.base import ExecutionRow, InvalidCursor

STATUSES = ("success", "error", "timeout")
_SPACED_OFFSET = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


async def list_executions(request: web.Request) -> web.Response:
    """`GET /api/executions?pipeline=&status=&since=&until=&limit=&before=`: newest first, one page."""
    query = request.query
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", field="status")
    try:
        rows, cursor = await request.app[STORE].list_executions(
            pipeline=query.get("pipeline") or None,
            status=status,
            since=_time(query, "since"),
            until=_time(query, "until"),
            limit=limit_of(query),
            before=query.get("before") or None,
        )
    except InvalidCursor:
        raise BadRequest("'before' is not a cursor this server handed out", field="before") from None
    body: dict[str, Any] = {"executions": [_execution(row, steps=False) for row in rows], "next": None}
    if cursor is not None:
        body["next"] = str(request.rel_url.update_query(before=cursor))
    return json_response(body)


async def get_execution(request: web.Request) -> web.Response:
    """`GET /api/executions/{id}`: one recorded execution with per-step timings."""
    row = await request.app[STORE].get_execution(request.match_info["id"])
    if row is None:
        raise NotFound(f"no recorded execution {clip(request.match_info['id'])!r}")
    return json_response(_execution(row, steps=True))


async def list_pipelines(request: web.Request) -> web.Response:
    """`GET /api/pipelines`: each pipeline's trigger and steps, and whether each step type is available now."""
    state = request.app[ENGINE].state
    pipelines = []
    for pipeline in state.config.pipelines.values():
        steps = []
        for step in (*pipeline.steps, *pipeline.compensation):
            provider = state.registry.steps.get(step.type)
            steps.append(
                {
                    "name": step.name,
                    "type": step.type,
                    "available": provider is not None,
                    "provider": provider.provider if provider else None,
                    "compensation": step in pipeline.compensation,
                }
            )
        trigger = pipeline.trigger
        pipelines.append(
            {
                "name": pipeline.name,
                "trigger": {"type": trigger.type, "config": dict(trigger.config)},
                "on_error": pipeline.on_error,
                "timeout_seconds": pipeline.timeout,
                "available": all(s["available"] for s in steps),
                "steps": steps,
            }
        )
    return json_response({"pipelines": pipelines, "source": state.config.source})


def _execution(row: ExecutionRow, *, steps: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "pipeline": row.pipeline,
        "workflow_type": row.workflow_type,
        "status": row.status,
        "started_at": row.started_at.isoformat(),
        "duration_ms": round(row.duration_ms, 3),
        "error": row.error,
    }
    if steps:
        body["result"] = row.result
        body["steps"] = [
            {
                "name": s.name,
                "type": s.type,
                "status": s.status,
                "duration_ms": round(s.duration_ms, 3),
                "error": s.error,
            }
            for s in row.steps
        ]
    return body


def _time(query: Any, key: str) -> datetime | None:
    raw = query.get(key)
    if not raw:
        return None
    # An unencoded `+01:00` offset arrives as ` 01:00` (a query string's `+` is a space): put it back.
    raw = _SPACED_OFFSET.sub(r"\1+\2", raw.strip())
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{key} must be an ISO 8601 time, like 2026-11-25T19:00:00Z", field=key) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def limit_of(query: Any) -> int:
    """The `limit` query argument, 1 to 1000 (50 when absent)."""
    raw = query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit must be a whole number from 1 to 1000", field="limit")
    return int(raw)
