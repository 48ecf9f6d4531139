"""`GET /openapi.json`: an OpenAPI 3.1 document of the live triggers and the fixed paths of the main listener."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..keys import ENGINE
from .middleware import json_response
from .openapi_pipelines import operation
from .openapi_schema import components, error, fixed_paths, ok_json

_EXECUTION = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "string"},
        "pipeline": {"type": "string"},
        "status": {"type": "string", "description": "queued, running, success, error, timeout or dead"},
        "result": {"description": "what the caller saw: the response body, or the final data"},
        "error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    },
    "additionalProperties": False,  # never the payload or step outputs: this listener is public
}


async def openapi(request: web.Request) -> web.Response:
    """The document, built from the config and the step types in service now."""
    state = request.app[ENGINE].state
    paths: dict[str, dict[str, Any]] = {}
    for method, template, pipeline in state.config.router.routes():
        paths.setdefault(template, {})[method.lower()] = operation(method, template, pipeline)
    paths["/executions/{id}"] = {
        "get": {
            "operationId": "getExecution",
            "summary": "Status of any recorded execution, then its result or its error",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": ok_json("the execution", _EXECUTION), "404": error("unknown, or expired")},
        }
    }
    paths.update(fixed_paths())
    paths["/openapi.json"] = {"get": {"summary": "This document", "responses": {"200": ok_json("OpenAPI 3.1")}}}
    return json_response(
        {
            "openapi": "3.1.0",
            "info": {"title": state.config.name, "version": "1"},
            "paths": paths,
            "components": components(),
        }
    )
