"""One trigger's OpenAPI operation: parameters, a request body from its `step.validate`, and the statuses it answers."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..config.model import END, Pipeline, Step
from .openapi_schema import error, ok_json

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_QUERY = re.compile(r"\.query\.([A-Za-z_][A-Za-z0-9_]*)")
# Built-in step types that never answer the request themselves (json_response does; components may).
_SILENT = frozenset({"step.validate", "step.set", "step.log", "step.transform", "step.publish", "step.conditional"})
_UPSTREAM = frozenset({"step.http_call"})  # 502 when the upstream fails
_BODY_METHODS = ("POST", "PUT", "PATCH")
_QUEUED = {
    "type": "object",
    "required": ["execution_id", "status", "location"],
    "properties": {"execution_id": {"type": "string"}, "status": {"const": "queued"}, "location": {"type": "string"}},
}


def operation(method: str, template: str, pipeline: Pipeline) -> dict[str, Any]:
    """The operation of `pipeline`'s HTTP trigger on `method template`."""
    body, required_query = request_body(pipeline)
    path_params = _PARAM.findall(template)
    parameters = [
        # A path segment: any text but a slash (a slash, or nothing, is another path: 404).
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[^/]+$"}}
        for p in path_params
    ]
    parameters += [
        {"name": q, "in": "query", "required": q in required_query, "schema": {"type": "string"}}
        for q in sorted(set(_query_names(pipeline)) | required_query)
    ]
    op: dict[str, Any] = {
        "operationId": pipeline.name,
        "summary": f"pipeline {pipeline.name}",
        "parameters": parameters,
        "responses": responses(pipeline, has_path_params=bool(path_params)),
    }
    if method in _BODY_METHODS:
        op["requestBody"] = {
            "required": bool(body.get("required")),
            "content": {"application/json": {"schema": body}},
        }
    return op


def request_body(pipeline: Pipeline) -> tuple[dict[str, Any], set[str]]:
    """The body schema the pipeline's leading `step.validate` steps check, and the query fields they require."""
    schemas: list[dict[str, Any]] = []
    required_query: set[str] = set()
    for step in pipeline.steps:
        if step.type != "step.validate":
            break  # later steps validate data other steps have changed: not the request's
        config = step.config
        strategy = config.get("strategy", "json_schema" if "schema" in config else "required_fields")
        if strategy == "json_schema" and isinstance(config.get("schema"), Mapping):
            schemas.append(_plain(config["schema"]))
        elif strategy == "required_fields":
            fields = [str(f) for f in config.get("required_fields", config.get("fields")) or ()]
            required_query |= {f.split(".", 1)[1].split(".")[0] for f in fields if f.startswith("query.")}
            schemas.append(_required(f for f in fields if not f.startswith(("query.", "params."))))
    if not schemas:
        return {"type": "object"}, required_query
    if len(schemas) == 1 and schemas[0].get("type") == "object":
        return schemas[0], required_query
    combined: dict[str, Any] = {"type": "object", "allOf": schemas}
    required = sorted({name for s in schemas for name in s.get("required", ()) if isinstance(name, str)})
    if required:
        combined["required"] = required
    return combined, required_query


def _required(fields: Any) -> dict[str, Any]:
    """A schema for `required_fields`: each dotted field present, neither null nor empty text."""
    schema: dict[str, Any] = {"type": "object"}
    for field in fields:
        node = schema
        parts = field.split(".")
        for i, part in enumerate(parts):
            if part.lstrip("-").isdigit():  # an index into a list: required, but not described further
                break
            node.setdefault("required", [])
            if part not in node["required"]:
                node["required"].append(part)
            child = node.setdefault("properties", {}).setdefault(part, {})
            if i == len(parts) - 1:
                child["not"] = {"enum": [None, ""]}
            else:
                child["type"] = "object"
            node = child
    return schema


def responses(pipeline: Pipeline, *, has_path_params: bool) -> dict[str, Any]:
    """The statuses this trigger can answer, each with its meaning."""
    out: dict[str, Any] = {}
    if pipeline.trigger.is_async:
        queued = ok_json("queued: follow `Location` (GET /executions/{id})", _QUEUED)
        link = {"operationId": "getExecution", "parameters": {"id": "$response.body#/execution_id"}}
        out["202"] = {**queued, "links": {"execution": link}}
    else:
        out.update(_answers(pipeline))
    out["400"] = error("a body that is not a JSON object, or data a step refused (the step is named)")
    if has_path_params:
        out["404"] = error("no trigger matches the path (a parameter holding a slash, or empty)")
    out["405"] = {"$ref": "#/components/responses/MethodNotAllowed"}
    out["413"] = error("the body is over the limit")
    if not pipeline.trigger.is_async:
        out["500"] = error("a step raised: the step and the execution id are named, never a traceback")
        if any(s.type in _UPSTREAM for s in _all_steps(pipeline)):
            out["502"] = error("an upstream that step.http_call called failed")
    out["503"] = error("the server is starting or draining, or a step type is unavailable now")
    if not pipeline.trigger.is_async:
        out["504"] = error("the pipeline or a step timed out")
    return dict(sorted(out.items(), key=lambda item: item[0]))


def _answer(description: str) -> dict[str, Any]:
    """A pipeline's own answer: any JSON, with the `X-Execution-ID` that GET /executions/{id} resolves."""
    return {
        **ok_json(description),
        "headers": {"X-Execution-ID": {"schema": {"type": "string"}, "description": "the execution's id"}},
        "links": {
            "execution": {"operationId": "getExecution", "parameters": {"id": "$response.header.X-Execution-ID"}}
        },
    }


def _answers(pipeline: Pipeline) -> dict[str, Any]:
    """The success answers: each step.json_response's status, 200 with the final data, and components' own."""
    out: dict[str, Any] = {}
    others = sorted({s.type for s in _all_steps(pipeline)} - _SILENT - _UPSTREAM - {"step.json_response"})
    for step in _all_steps(pipeline):
        if step.type == "step.json_response":
            status = step.config.get("status", 200)
            if isinstance(status, int) and not isinstance(status, bool):
                out[str(status)] = _answer(f"the answer of step {step.name!r}")
            else:
                others.append(f"{step.name} (a templated status)")
    if _ends_without_answer(pipeline):
        out["200"] = _answer("the final data")
    if others:
        # A component's step (or a templated status) may answer with a status of its own choosing.
        out["default"] = {"description": "the answer of " + ", ".join(others), "content": {"application/json": {}}}
    return out


def _ends_without_answer(pipeline: Pipeline) -> bool:
    """Whether some run reaches the end without a step.json_response (the answer is then 200 with the data)."""
    steps, seen, todo = pipeline.steps, set(), [0] if pipeline.steps else [END]
    while todo:
        i = todo.pop()
        if i == END:
            return True
        if i in seen:
            continue
        seen.add(i)
        if steps[i].type == "step.json_response":
            continue
        todo.append(pipeline.flow[i])
        todo.extend(pipeline.index[t] for t in steps[i].targets if t in pipeline.index)
    return False


def _all_steps(pipeline: Pipeline) -> Sequence[Step]:
    return (*pipeline.steps, *pipeline.compensation)


def _query_names(pipeline: Pipeline) -> list[str]:
    """Query arguments the steps' templates read (`{{ .query.NAME }}`)."""
    return [name for step in pipeline.steps for name in _QUERY.findall(repr(_plain(step.config)))]


def _plain(value: Any) -> Any:
    """Config values as plain dicts and lists (the loader's mappings carry line numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
