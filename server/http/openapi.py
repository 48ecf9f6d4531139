"""`GET /openapi.json`: an OpenAPI 3.1 document of the live triggers and the fixed paths."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..keys import ENGINE
from .middleware import json_response

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
        }
    },
}
_FIXED = {
    "/healthz": "Health with named checks",
    "/readyz": "Readiness",
    "/livez": "Liveness",
    "/metrics": "Prometheus metrics",
}


async def openapi(request: web.Request) -> web.Response:
    """The document, built from the config in service now."""
    engine = request.app[ENGINE]
    paths: dict[str, dict[str, Any]] = {}
    for method, template, pipeline in engine.config.router.routes():
        operation = {
            "operationId": pipeline.name,
            "summary": f"pipeline {pipeline.name}",
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in _PARAM.findall(template)
            ],
            "responses": _responses(pipeline.trigger.is_async),
        }
        if method in ("POST", "PUT", "PATCH"):
            operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
        paths.setdefault(template, {})[method.lower()] = operation
    paths["/executions/{id}"] = {
        "get": {
            "operationId": "getExecution",
            "summary": "Status and result of an async execution",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the execution"}, "404": _ERROR},
        }
    }
    for path, summary in _FIXED.items():
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "ok"}}}}
    return json_response({"openapi": "3.1.0", "info": {"title": engine.config.name, "version": "1"}, "paths": paths})


def _responses(is_async: bool) -> dict[str, Any]:
    ok = {"202": {"description": "queued; see Location"}} if is_async else {"200": {"description": "ok"}}
    return {**ok, "400": _ERROR, "404": _ERROR, "413": _ERROR, "500": _ERROR, "503": _ERROR, "504": _ERROR}
