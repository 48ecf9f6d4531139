"""The admin document's schemas and building blocks: each answer's schema is the shape its handler builds.

The handlers are in components_api, history_api, executions_api, queries, queue_api and audit_api;
`openapi_paths.py` puts these schemas on the API's paths.
"""

from __future__ import annotations

from typing import Any

from ..http.openapi_schema import error
from ..reload.loader import COMPONENT_ID

STRING, INT, NUMBER, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
NULLABLE_STRING, NULLABLE_INT = {"type": ["string", "null"]}, {"type": ["integer", "null"]}
STRINGS = {"type": "array", "items": STRING}


def obj(required: list[str], **properties: Any) -> dict[str, Any]:
    """An object schema with these properties, `required` among them."""
    return {"type": "object", "required": required, "properties": properties}


def every(**properties: Any) -> dict[str, Any]:
    """An object schema whose properties are all required."""
    return obj(list(properties), **properties)


REPLICA = every(
    replica=STRING,
    version=NULLABLE_INT,
    sha256=NULLABLE_STRING,
    status={"enum": ["serving", "error"]},
    error=NULLABLE_STRING,
    reported_at=NULLABLE_STRING,
)
LAST_ERROR = every(error=STRING, line=NULLABLE_INT, sha256=NULLABLE_STRING, at=STRING)
COMPONENT_FIELDS: dict[str, Any] = {
    "id": STRING,
    "status": {"enum": ["serving", "error"]},
    "sha256": STRING,
    "version": INT,
    "loaded_at": STRING,
    "path": STRING,
    "step_types": STRINGS,
    "endpoints": {**STRINGS, "description": "`METHOD /path` of each endpoint it registers"},
    "in_flight": INT,
    "last_error": {"oneOf": [{"type": "null"}, LAST_ERROR], "description": "its last refused version"},
    "replicas": {"type": "array", "items": REPLICA},
}
# In service: the version fields are there; in error (a file that never loaded), only the id, status and error.
COMPONENT = obj(["id", "status", "last_error", "replicas"], **COMPONENT_FIELDS)
COMPONENT_DETAIL = obj(
    ["id", "status", "last_error", "replicas", "used_by", "source"],
    **COMPONENT_FIELDS,
    used_by={**STRINGS, "description": "the pipelines using its step types: they answer 503 without it"},
    source={"type": ["string", "null"], "description": "the source serving, or the file that failed (null: unread)"},
)
VALIDATED = {
    "oneOf": [
        every(valid={"const": True}, sha256=STRING, step_types=STRINGS, endpoints=STRINGS),
        every(valid={"const": False}, error=STRING, line=NULLABLE_INT),
    ]
}
VERSION_FIELDS: dict[str, Any] = {
    "version": INT,
    "sha256": STRING,
    "at": STRING,
    "who": STRING,
    "origin": {"enum": ["api", "file", "store"], "description": "an API call, a saved file, or a replica's upload"},
    "deleted": BOOL,
}
VERSION = every(**VERSION_FIELDS)
DIFF = every(id=STRING, **{"from": INT, "to": INT}, added=INT, removed=INT, diff=STRING)
EXECUTION_FIELDS: dict[str, Any] = {
    "id": STRING,
    "pipeline": STRING,
    "workflow_type": STRING,
    "status": {"enum": ["success", "error", "timeout"]},
    "started_at": STRING,
    "duration_ms": NUMBER,
    "error": {"type": ["object", "null"], "properties": {"error": STRING}},
}
EXECUTION = every(**EXECUTION_FIELDS)
STEP = every(
    name=STRING, type=STRING, status=STRING, duration_ms=NUMBER, error=NULLABLE_STRING, output={"description": "any"}
)
EXECUTION_DETAIL = every(
    **EXECUTION_FIELDS,
    result={"description": "the answer's body, or the final data"},
    steps={"type": "array", "items": STEP},
    payload={"description": "the trigger payload (null when not kept)"},
    components={"type": "object", "additionalProperties": INT, "description": "component id: version"},
    rerun_of=NULLABLE_STRING,
    truncated=BOOL,
    redacted=BOOL,
    side_effects={**STRINGS, "description": "its chat_reply, http_call, db_exec and publish steps"},
)
RERUN = every(
    id=STRING,
    rerun_of=STRING,
    status={"enum": ["success", "error", "timeout"]},
    error={"type": ["object", "null"], "properties": {"error": STRING}},
)
PIPELINE_STEP = every(
    name=STRING,
    type=STRING,
    available=BOOL,
    provider=NULLABLE_STRING,
    compensation=BOOL,
    next={**STRINGS, "description": "the steps it may go to (`end` after the last)"},
)
RECENT = every(count=INT, success_rate={"type": ["number", "null"]}, p95_ms={"type": ["number", "null"]})
PIPELINE = every(
    name=STRING,
    trigger=every(type=STRING, config={"type": "object"}),
    on_error=STRING,
    timeout_seconds=NUMBER,
    available=BOOL,
    steps={"type": "array", "items": PIPELINE_STEP},
    recent=RECENT,
)
JOB_FIELDS: dict[str, Any] = {
    "id": STRING,
    "kind": STRING,
    "pipeline": STRING,
    "workflow_type": STRING,
    "attempts": INT,
    "enqueued_at": STRING,
}
AUDIT_ENTRY = every(
    id=INT,
    at=STRING,
    actor=STRING,
    action=STRING,
    target=NULLABLE_STRING,
    client_address=NULLABLE_STRING,
    detail={"type": ["object", "null"], "description": "a component change: its `version` and `sha256`"},
)
LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "page size, 1 to 1000 (default 50)",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
}
CSRF = {"$ref": "#/components/parameters/CsrfToken"}
CSRF_PARAMETER = {
    "name": "X-CSRF-Token",
    "in": "header",
    "required": False,
    "description": "the session's `csrf`: required on a write made with the session cookie, ignored with a token",
    "schema": STRING,
}
EXAMPLE_ID = "hello_example"
EXAMPLE_SOURCE = (
    "from server import hookimpl\n\n\nasync def hello(ctx):\n    return {'hello': 'world'}\n\n\n"
    "@hookimpl\ndef register_steps(register):\n    register('step.hello_example', hello)\n"
)
SOURCE = {"type": "string", "minLength": 1, "description": "the component's Python source"}
COMPONENT_BODY = {
    "type": "object",
    "required": ["id", "source"],
    "properties": {"id": {"type": "string", "pattern": f"^{COMPONENT_ID.pattern}$"}, "source": SOURCE},
    "examples": [{"id": EXAMPLE_ID, "source": EXAMPLE_SOURCE}],
}
SOURCE_BODY = {
    "type": "object",
    "required": ["source"],
    "properties": {"source": SOURCE},
    "examples": [{"source": EXAMPLE_SOURCE}],
}


def query(name: str, description: str, schema: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A query parameter (optional unless `required=True` is passed)."""
    parameter = {"name": name, "in": "query", "required": False, "description": description, "schema": schema or STRING}
    return {**parameter, **extra}


def path(name: str, example: str | None = None, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A path parameter: one segment unless `schema` says otherwise."""
    parameter = {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or {"type": "string", "pattern": "^[^/]+$"},
    }
    return parameter if example is None else {**parameter, "example": example}


def op(summary: str, ok: dict[str, Any], *errors: tuple[int, str], write: bool = False, **extra: Any) -> dict[str, Any]:
    """An operation behind the token or cookie: its answers, plus 401, 403 and 503 that every admin call may give.

    A write (`write`) takes the session's CSRF token with the cookie.
    """
    responses = {**ok, "401": error("no token, or one that does not verify (with `WWW-Authenticate`)")}
    responses["403"] = error("the caller lacks the role this call needs (or a cookie write its CSRF token)")
    responses["503"] = error("the admin API is disabled (no key), or the store is unreachable")
    responses.update({str(status): error(text) for status, text in errors})
    if write:
        extra["parameters"] = [*extra.get("parameters", []), CSRF]
    return {"summary": summary, **extra, "responses": dict(sorted(responses.items()))}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}
