"""Admin API for recorded executions: filtered pages, one execution in detail, and re-running it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import BadRequest, Conflict, NotFound
from ..http.middleware import json_response
from ..keys import ENGINE, IDENTITY, RECORDER, STORE
from ..store.base import ExecutionRow, InvalidCursor
from ..store.detail import REDACTED
from .queries import limit_of, refuse_nul, time_of

STATUSES = ("success", "error", "timeout")
# Step types that reach outside the server: re-running a pipeline with one of them repeats that effect.
SIDE_EFFECTS = frozenset({"step.chat_reply", "step.http_call", "step.db_exec", "step.publish"})


async def list_executions(request: web.Request) -> web.Response:
    """`GET /api/executions?pipeline=&status=&workflow_type=&error=&since=&until=&limit=&before=`: newest first."""
    query = request.query
    refuse_nul(query)
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", field="status")
    try:
        rows, following = await request.app[STORE].list_executions(
            pipeline=query.get("pipeline") or None,
            status=status,
            workflow_type=query.get("workflow_type") or None,
            error=query.get("error") or None,
            since=time_of(query, "since"),
            until=time_of(query, "until"),
            limit=limit_of(query),
            before=query.get("before") or None,
        )
    except InvalidCursor:
        raise BadRequest("'before' is not a cursor this server handed out", field="before") from None
    body: dict[str, Any] = {"executions": [execution_json(row, steps=False) for row in rows], "next": None}
    if following is not None:
        body["next"] = str(request.rel_url.update_query(before=following))
    return json_response(body)


async def get_execution(request: web.Request) -> web.Response:
    """`GET /api/executions/{id}`: one execution with its steps, outputs, payload and component versions."""
    row = await _row(request)
    body = execution_json(row, steps=True)
    policy = request.app[RECORDER].details
    if policy is not None:
        # The result and the errors hold the pipeline's data too: the same secrets are hidden there (the public
        # GET /executions/{id} keeps answering an async pipeline's real result to whoever holds its id).
        body["result"], body["error"] = policy.redact(body["result"]), policy.redact(body["error"])
        for step in body["steps"]:
            step["error"] = policy.redact(step.get("error"))
    detail = row.detail if isinstance(row.detail, dict) else {}
    outputs = detail.get("outputs") or {}
    for step in body["steps"]:
        step["output"] = outputs.get(step["name"])
    body["payload"] = detail.get("payload")
    body["components"] = detail.get("components") or {}
    body["rerun_of"] = detail.get("rerun_of")
    body["truncated"] = bool(detail.get("truncated"))
    body["redacted"] = bool(detail.get("redacted"))
    pipeline = request.app[ENGINE].config.pipelines.get(row.pipeline)
    body["side_effects"] = (
        []
        if pipeline is None
        else [s.name for s in (*pipeline.steps, *pipeline.compensation) if s.type in SIDE_EFFECTS]
    )
    return json_response(body)


async def rerun_execution(request: web.Request) -> web.Response:
    """`POST /api/executions/{id}/rerun`: run the pipeline again on the recorded payload (`manual`, `rerun_of`)."""
    row = await _row(request)
    detail = row.detail if isinstance(row.detail, dict) else {}
    payload = detail.get("payload")
    if not isinstance(payload, dict) or detail.get("truncated"):
        raise Conflict(f"execution {row.id!r} has no complete recorded payload to send again", id=row.id)
    if _holds(payload, REDACTED):  # sending "[redacted]" on as a password or a token would be wrong, silently
        raise Conflict(f"execution {row.id!r} has redacted values in its payload; it cannot be sent again", id=row.id)
    engine = request.app[ENGINE]
    pipeline = engine.config.pipelines.get(row.pipeline)
    if pipeline is None:
        raise NotFound(f"pipeline {row.pipeline!r} is no longer in the config")
    outcome = await engine.run(pipeline, payload, workflow_type="manual", rerun_of=row.id)
    who = request[IDENTITY].subject
    await request.app[STORE].audit(who, "execution.rerun", row.pipeline, request.remote, {"execution": row.id})
    body: dict[str, Any] = {"id": outcome.execution_id, "rerun_of": row.id, "status": outcome.status}
    body["error"] = outcome.error.to_json() if outcome.error is not None else None
    return json_response(body, 201)


async def _row(request: web.Request) -> ExecutionRow:
    execution_id = request.match_info["id"]
    row = None if "\x00" in execution_id else await request.app[STORE].get_execution(execution_id)
    if row is None:
        raise NotFound(f"no recorded execution {request.match_info['id'][:128]!r}")
    return row


def execution_json(row: ExecutionRow, *, steps: bool) -> dict[str, Any]:
    """An execution as the admin API shows it (with its steps and result when `steps`)."""
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


def _holds(value: Any, marker: str) -> bool:
    """Whether `marker` is a value anywhere in `value` (a JSON document)."""
    if isinstance(value, dict):
        return any(_holds(v, marker) for v in value.values())
    if isinstance(value, list):
        return any(_holds(v, marker) for v in value)
    return bool(value == marker)
