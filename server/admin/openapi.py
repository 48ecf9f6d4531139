"""`GET /api/openapi.json` on the admin listener: an OpenAPI 3.1 document of the admin API (it needs no token)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..http.middleware import json_response
from ..http.openapi_schema import components, error, fixed_paths, ok_json
from ..reload.loader import COMPONENT_ID

_STRING, _INT = {"type": "string"}, {"type": "integer"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_COMPONENT = {
    "type": "object",
    "required": ["id", "status", "last_error", "replicas"],
    "properties": {
        "id": _STRING,
        "status": {"enum": ["serving", "error"]},
        "sha256": _STRING,
        "version": _INT,
        "loaded_at": _STRING,
        "path": _STRING,
        "step_types": {"type": "array", "items": _STRING},
        "endpoints": {"type": "array", "items": _STRING},
        "in_flight": _INT,
        "last_error": {"type": ["object", "null"], "properties": {"error": _STRING}},
        "replicas": {"type": "array", "items": {"type": "object"}},
        "source": _NULLABLE_STRING,
    },
}
_EXECUTION = {
    "type": "object",
    "required": ["id", "pipeline", "workflow_type", "status", "started_at", "duration_ms", "error"],
    "properties": {
        "id": _STRING,
        "pipeline": _STRING,
        "workflow_type": _STRING,
        "status": _STRING,
        "started_at": _STRING,
        "duration_ms": {"type": "number"},
        "error": {"type": ["object", "null"]},
        "result": {},
        "steps": {"type": "array", "items": {"type": "object"}},
    },
}
_JOB = {
    "type": "object",
    "required": ["id", "kind", "pipeline", "workflow_type", "attempts", "enqueued_at"],
    "properties": {"id": _STRING, "kind": _STRING, "pipeline": _STRING, "attempts": _INT, "enqueued_at": _STRING},
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "page size, 1 to 1000 (default 50)",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
}
_EXAMPLE_ID = "hello_example"
_EXAMPLE_SOURCE = (
    "from server import hookimpl\n\n\nasync def hello(ctx):\n    return {'hello': 'world'}\n\n\n"
    "@hookimpl\ndef register_steps(register):\n    register('step.hello_example', hello)\n"
)
_SOURCE = {"type": "string", "minLength": 1, "description": "the component's Python source"}
_COMPONENT_BODY = {
    "type": "object",
    "required": ["id", "source"],
    "properties": {"id": {"type": "string", "pattern": f"^{COMPONENT_ID.pattern}$"}, "source": _SOURCE},
    "examples": [{"id": _EXAMPLE_ID, "source": _EXAMPLE_SOURCE}],
}
_SOURCE_BODY = {
    "type": "object",
    "required": ["source"],
    "properties": {"source": _SOURCE},
    "examples": [{"source": _EXAMPLE_SOURCE}],
}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema or _STRING}


def _path(name: str, example: str | None = None) -> dict[str, Any]:
    parameter = {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[^/]+$"}}
    return parameter if example is None else {**parameter, "example": example}


def _op(summary: str, ok: dict[str, Any], *errors: tuple[int, str], **extra: Any) -> dict[str, Any]:
    """An operation behind the token: its answers, plus 401, 403 and 503 that every admin call may give."""
    responses = {**ok, "401": error("no token, or one that does not verify (with `WWW-Authenticate`)")}
    responses["403"] = error("the token lacks the role this call needs")
    responses["503"] = error("the admin API is disabled (no key), or the store is unreachable")
    responses.update({str(status): error(text) for status, text in errors})
    return {"summary": summary, **extra, "responses": dict(sorted(responses.items()))}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _component_paths(prefix: str) -> dict[str, dict[str, Any]]:
    bad_id = (400, "an id that breaks the rule [a-z0-9][a-z0-9_]{0,63}, or a bad body")
    missing = (404, "no such component")
    too_big = (413, "the body or the source is over its limit")
    refused = (422, "the source does not load: the error and its line; nothing is replaced")
    one = {"parameters": [_path("id", _EXAMPLE_ID)]}
    listing = _obj(["components"], components={"type": "array", "items": _COMPONENT})
    return {
        prefix: {
            "get": _op("Every component, its status and what each replica serves", {"200": ok_json("ok", listing)}),
            "post": _op(
                "Load a new component",
                {"201": ok_json("in service", _COMPONENT)},
                bad_id,
                (409, "the component exists: replace it with PUT"),
                too_big,
                refused,
                requestBody=_json_body(_COMPONENT_BODY),
            ),
        },
        prefix + "/{id}": {
            **one,
            "get": _op("One component, with its source", {"200": ok_json("ok", _COMPONENT)}, bad_id, missing),
            "put": _op(
                "A new version of a component",
                {"200": ok_json("in service", _COMPONENT)},
                bad_id,
                missing,
                too_big,
                refused,
                requestBody=_json_body(_SOURCE_BODY),
            ),
            "delete": _op("Out of service and off disk", {"204": {"description": "deleted"}}, bad_id, missing),
        },
    }


def _other_paths() -> dict[str, dict[str, Any]]:
    bad_query = (400, "a query argument out of its range or format")
    executions = _obj(["executions", "next"], executions={"type": "array", "items": _EXECUTION}, next=_NULLABLE_STRING)
    queue = _obj(
        ["backend", "depth", "dead", "oldest_age_seconds", "jobs"],
        backend=_STRING,
        depth=_INT,
        dead=_INT,
        oldest_age_seconds={"type": "number"},
        jobs={"type": "array", "items": _JOB},
    )
    filters = [
        _query("pipeline", "only this pipeline's executions"),
        _query("status", "only this outcome", {"enum": ["success", "error", "timeout"]}),
        _query("since", "started at or after (ISO 8601)", {"type": "string", "format": "date-time"}),
        _query("until", "started before (ISO 8601)", {"type": "string", "format": "date-time"}),
        _LIMIT,
        _query("before", "the cursor of the next page (from `next`)"),
    ]
    audit = [
        _query("component", "only entries about this component"),
        _query("actor", "only entries by this subject"),
        _LIMIT,
        _query("cursor", "the cursor of the next page"),
    ]
    return {
        "/api/executions": {
            "get": _op(
                "Recorded executions, newest first",
                {"200": ok_json("a page", executions)},
                bad_query,
                parameters=filters,
            )
        },
        "/api/executions/{id}": {
            "parameters": [_path("id")],
            "get": _op("One execution, with per-step timings", {"200": ok_json("ok", _EXECUTION)}, (404, "unknown")),
        },
        "/api/pipelines": {"get": _op("Triggers and steps, and whether each step type is available", _ok_object())},
        "/api/audit": {
            "get": _op(
                "The audit log, newest first: who changed what, when, from where",
                _ok_object(),
                bad_query,
                parameters=audit,
            )
        },
        "/api/queue": {
            "get": _op(
                "The durable queue: depth, dead letters, and the jobs waiting or running",
                {"200": ok_json("ok", queue)},
                bad_query,
                parameters=[_LIMIT],
            )
        },
        "/api/queue/dead": {
            "get": _op(
                "Dead letters, oldest first, with their last error",
                {"200": ok_json("ok", _obj(["dead"], dead={"type": "array", "items": _JOB}))},
                bad_query,
                parameters=[_LIMIT],
            )
        },
        "/api/queue/dead/{id}/retry": {
            "parameters": [_path("id")],
            "post": _op(
                "Put a dead letter back in the queue",
                {"200": ok_json("queued", _obj(["id", "status"], id=_STRING, status={"const": "queued"}))},
                (404, "no such dead job"),
            ),
        },
    }


def _ok_object() -> dict[str, Any]:
    return {"200": ok_json("ok", {"type": "object"})}


def document() -> dict[str, Any]:
    """The admin API's OpenAPI document (static: the routes do not depend on the config)."""
    paths: dict[str, dict[str, Any]] = {}
    for prefix in ("/api/dynamic/components", "/api/v1/admin/components"):
        paths.update(_component_paths(prefix))
    paths.update(_other_paths())
    page = {"200": {"description": "the admin page", "content": {"text/html": {"schema": _STRING}}}}
    paths["/"] = {
        "get": {
            "summary": "The admin page (it calls the API with a token you paste)",
            "security": [],
            "responses": page,
        }
    }
    paths["/api/openapi.json"] = {
        "get": {"summary": "This document", "security": [], "responses": {"200": ok_json("ok")}}
    }
    paths.update(fixed_paths())
    bearer = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "workflow-server admin API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components(securitySchemes={"bearer": bearer}),
    }


_DOCUMENT = document()


async def admin_openapi(request: web.Request) -> web.Response:
    """The admin API's document."""
    return json_response(_DOCUMENT)
