"""The pieces both OpenAPI documents share: error answers, JSON answers, and the health and metrics paths."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_HEALTH = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
_FIXED = {  # path: (summary, whether it may answer 503)
    "/healthz": ("Health with named checks; 503 when one fails", True),
    "/health": ("Alias of /healthz", True),
    "/readyz": ("Readiness: 200 once components and config are loaded, until shutdown begins", True),
    "/ready": ("Alias of /readyz", True),
    "/livez": ("Liveness", False),
    "/live": ("Alias of /livez", False),
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
METHOD_NOT_ALLOWED: dict[str, Any] = {
    "description": "another method on this path: the ones it takes are in `Allow`",
    "headers": {"Allow": {"schema": {"type": "string"}, "description": "e.g. `GET, POST`"}},
    "content": {"application/json": {"schema": _ERROR_REF}},
}


def components(**extra: Any) -> dict[str, Any]:
    """The document's `components`: the error schema and the 405 answer, plus `extra` sections."""
    return {"schemas": {"Error": ERROR_SCHEMA}, "responses": {"MethodNotAllowed": METHOD_NOT_ALLOWED}, **extra}


def error(description: str) -> dict[str, Any]:
    """A documented error answer: JSON with at least an `error` string."""
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def ok_json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A documented JSON answer with `schema` (any JSON when None)."""
    return {"description": description, "content": {"application/json": {"schema": schema or {}}}}


def fixed_paths() -> dict[str, dict[str, Any]]:
    """Health and metrics: the paths both listeners serve, with no authentication."""
    paths: dict[str, dict[str, Any]] = {}
    for path, (summary, may_fail) in _FIXED.items():
        responses = {"200": ok_json("ok", _HEALTH)}
        if may_fail:
            responses["503"] = ok_json("not healthy, or not ready, with the reason", _HEALTH)
        paths[path] = {"get": {"summary": summary, "security": [], "responses": responses}}
    text = {"text/plain": {"schema": {"type": "string"}}}
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics (text format)",
            "security": [],
            "responses": {"200": {"description": "the metrics", "content": text}},
        }
    }
    return paths
