"""The admin document's API paths: components and their history, executions, pipelines, the queue and the audit log.

`openapi.py` adds the session, the event stream and the page, and assembles the document.
"""

from __future__ import annotations

from typing import Any

from ..http.openapi_schema import ok_json
from .openapi_schemas import (
    AUDIT_ENTRY,
    COMPONENT,
    COMPONENT_BODY,
    COMPONENT_DETAIL,
    DIFF,
    EXAMPLE_ID,
    EXECUTION,
    EXECUTION_DETAIL,
    INT,
    JOB_FIELDS,
    LIMIT,
    NULLABLE_STRING,
    NUMBER,
    PIPELINE,
    RERUN,
    SOURCE_BODY,
    STRING,
    VALIDATED,
    VERSION,
    VERSION_FIELDS,
    every,
    json_body,
    obj,
    op,
    path,
    query,
)


def component_paths(prefix: str) -> dict[str, dict[str, Any]]:
    """A component prefix's paths: the list, one component, its dry run, and its stored versions."""
    bad_id = (400, "an id that breaks the rule [a-z0-9][a-z0-9_]{0,63}, or a bad body")
    missing = (404, "no such component")
    too_big = (413, "the body or the source is over its limit")
    not_json = (415, "a body that is not JSON")
    refused = (422, "the source does not load: the error and its line; nothing is replaced")
    one = {"parameters": [path("id", EXAMPLE_ID)]}
    listing = obj(["components"], components={"type": "array", "items": COMPONENT})
    tagged = ok_json("ok", COMPONENT_DETAIL)
    tagged["headers"] = {"ETag": {"schema": STRING, "description": '`"<sha256>"` of the version serving (if any)'}}
    if_match = {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": 'the `ETag` (`"<sha256>"`) the edit started from: 412 when another version serves by then',
        "schema": STRING,
    }
    number = {"type": "integer", "minimum": 1}
    bad_number = (400, "a bad id, or a version that is not a number")
    stored = (404, "no such stored version (or no longer kept)")
    return {
        prefix: {
            "get": op("Every component, its status and what each replica serves", {"200": ok_json("ok", listing)}),
            "post": op(
                "Load a new component",
                {"201": ok_json("in service", COMPONENT)},
                bad_id,
                (409, "the component exists: replace it with PUT"),
                too_big,
                not_json,
                refused,
                write=True,
                requestBody=json_body(COMPONENT_BODY),
            ),
        },
        prefix + "/{id}": {
            **one,
            "get": op(
                "One component: its source, the pipelines using it, and its ETag", {"200": tagged}, bad_id, missing
            ),
            "put": op(
                "A new version of a component",
                {"200": ok_json("in service", COMPONENT)},
                bad_id,
                missing,
                (412, "`If-Match` names another version than the one serving: nothing changed"),
                too_big,
                not_json,
                refused,
                write=True,
                parameters=[if_match],
                requestBody=json_body(SOURCE_BODY),
            ),
            "delete": op(
                "Out of service and off disk", {"204": {"description": "deleted"}}, bad_id, missing, write=True
            ),
        },
        prefix + "/{id}/validate": {
            **one,
            "post": op(
                "A dry run of every check a save makes; nothing is stored, swapped or recorded",
                {"200": ok_json("the verdict: valid, or the error and its line", VALIDATED)},
                bad_id,
                too_big,
                not_json,
                write=True,
                requestBody=json_body(SOURCE_BODY),
            ),
        },
        prefix + "/{id}/versions": {
            **one,
            "get": op(
                "The stored versions, newest first",
                {"200": ok_json("ok", every(id=STRING, versions={"type": "array", "items": VERSION}))},
                bad_id,
                (404, "no stored version of this component"),
            ),
        },
        prefix + "/{id}/versions/{version}": {
            "parameters": [path("id", EXAMPLE_ID), path("version", schema=number)],
            "get": op(
                "One stored version, with its source (empty for a deletion)",
                {"200": ok_json("ok", every(**VERSION_FIELDS, source=STRING))},
                bad_number,
                stored,
            ),
        },
        prefix + "/{id}/diff": {
            **one,
            "get": op(
                "A unified diff between two stored versions, with its added and removed line counts",
                {"200": ok_json("ok", DIFF)},
                bad_number,
                stored,
                parameters=[
                    query("from", "the older version", number, required=True),
                    query("to", "the newer version", number, required=True),
                ],
            ),
        },
    }


def other_paths() -> dict[str, dict[str, Any]]:
    """Executions, pipelines, the audit log and the queue."""
    bad_query = (400, "a query argument out of its range or format")
    executions = obj(["executions", "next"], executions={"type": "array", "items": EXECUTION}, next=NULLABLE_STRING)
    job = every(**JOB_FIELDS, status=STRING)
    queue = every(backend=STRING, depth=INT, dead=INT, oldest_age_seconds=NUMBER, jobs={"type": "array", "items": job})
    dead = every(**JOB_FIELDS, error=NULLABLE_STRING)
    filters = [
        query("pipeline", "only this pipeline's executions"),
        query("status", "only this outcome", {"enum": ["success", "error", "timeout"]}),
        query("workflow_type", "only this trigger type (`http`, `manual` for a re-run, ...)"),
        query("error", "only executions whose error message holds this text (case-insensitive)"),
        query("since", "started at or after (ISO 8601)", {"type": "string", "format": "date-time"}),
        query("until", "started before (ISO 8601)", {"type": "string", "format": "date-time"}),
        LIMIT,
        query("before", "the cursor of the next page (from `next`)"),
    ]
    audit = [
        query("component", "only entries about this component"),
        query("actor", "only entries by this subject"),
        LIMIT,
        query("cursor", "the cursor of the next page (from `next`)"),
    ]
    first = {"id": "$response.body#/executions/0/id"}  # links: the page's newest execution
    page = ok_json("a page", executions)
    page["links"] = {
        "execution": {"operationId": "getExecutionDetail", "parameters": first},
        "rerun": {"operationId": "rerunExecution", "parameters": first},
    }
    rerun = ok_json("the new execution", RERUN)
    rerun["links"] = {"execution": {"operationId": "getExecutionDetail", "parameters": {"id": "$response.body#/id"}}}
    pipelines = every(pipelines={"type": "array", "items": PIPELINE}, source=STRING)
    entries = every(entries={"type": "array", "items": AUDIT_ENTRY}, next=NULLABLE_STRING)
    return {
        "/api/executions": {
            "get": op(
                "Recorded executions, newest first",
                {"200": page},
                bad_query,
                operationId="listExecutions",
                parameters=filters,
            )
        },
        "/api/executions/{id}": {
            "parameters": [path("id")],
            "get": op(
                "One execution: its steps and their outputs, the payload, the component versions",
                {"200": ok_json("ok", EXECUTION_DETAIL)},
                (404, "no recorded execution by that id"),
                operationId="getExecutionDetail",
            ),
        },
        "/api/executions/{id}/rerun": {
            "parameters": [path("id")],
            "post": op(
                "Run the pipeline again on the recorded payload, now (recorded as `manual`, with `rerun_of`)",
                {"201": rerun},
                (404, "no recorded execution by that id, or its pipeline is no longer in the config"),
                (409, "the recorded payload was not kept whole (over the size cap)"),
                write=True,
                operationId="rerunExecution",
            ),
        },
        "/api/pipelines": {
            "get": op(
                "Triggers and steps, whether each step type is available, where each goes, and recent figures",
                {"200": ok_json("ok", pipelines)},
            )
        },
        "/api/audit": {
            "get": op(
                "The audit log, newest first: who changed what, when, from where",
                {"200": ok_json("a page", entries)},
                bad_query,
                parameters=audit,
            )
        },
        "/api/queue": {
            "get": op(
                "The durable queue: depth, dead letters, and the jobs waiting or running",
                {"200": ok_json("ok", queue)},
                bad_query,
                parameters=[LIMIT],
            )
        },
        "/api/queue/dead": {
            "get": op(
                "Dead letters, oldest first, with their last error",
                {"200": ok_json("ok", every(dead={"type": "array", "items": dead}))},
                bad_query,
                parameters=[LIMIT],
            )
        },
        "/api/queue/dead/{id}/retry": {
            "parameters": [path("id")],
            "post": op(
                "Put a dead letter back in the queue",
                {"200": ok_json("queued", every(id=STRING, status={"const": "queued"}))},
                (404, "no such dead job"),
                write=True,
            ),
        },
    }
