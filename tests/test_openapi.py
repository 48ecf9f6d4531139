"""The OpenAPI documents: request bodies from `step.validate`, the statuses each trigger really answers, and an
admin document that lists every admin route. (tests/test_openapi_fuzz.py holds both documents to the server.)"""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs

from tests.conftest import ROOT, Server

ORDERS = (ROOT / "example" / "order-processing-pipeline.yaml").read_text()
ERRORS = ["400", "405", "413", "500", "503", "504"]

CONFIG = """
pipelines:
  signup:
    trigger: {type: http, config: {path: /signup, method: POST}}
    steps:
      - name: fields
        type: step.validate
        config: {strategy: required_fields, required_fields: [email, address.city, query.ref]}
      - name: shape
        type: step.validate
        config: {strategy: json_schema, schema: {required: [email], properties: {email: {type: string}}}}
      - {name: tag, type: step.set, config: {values: {not_from_the_request: 1}}}
      - {name: later, type: step.validate, config: {required_fields: [not_from_the_request]}}
  routed:
    trigger: {type: http, config: {path: /routed, method: POST}}
    steps:
      - {name: route, type: step.conditional, config: {field: kind, routes: {a: loud}, default: quiet}}
      - {name: loud, type: step.json_response, config: {status: 202, body: {ok: true}}}
      - {name: quiet, type: step.set, config: {values: {quiet: true}}}
  answered:
    trigger: {type: http, config: {path: /answered, method: PUT}}
    steps:
      - {name: call, type: step.http_call, config: {url: "http://127.0.0.1:9/x"}}
      - {name: done, type: step.json_response, config: {status: 201, body: {}}}
  background:
    trigger: {type: http, config: {path: /jobs, method: POST, async: true}}
    steps:
      - {name: work, type: test.record}
"""


async def document(server: Server) -> dict[str, Any]:
    response = await server.client.get("/openapi.json")
    assert response.status == 200
    return await response.json()


def statuses(operation: dict[str, Any]) -> list[str]:
    return list(operation["responses"])


async def test_the_example_documents_its_validate_schema_and_its_answers(make_server) -> None:
    doc = await document(await make_server(ORDERS))
    create = doc["paths"]["/api/orders"]["post"]
    assert create["requestBody"] == {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["customer_id", "total"],
                    "properties": {
                        "customer_id": {"type": "string", "minLength": 1},
                        "total": {"type": ["number", "string"]},
                        "currency": {"type": "string"},
                    },
                }
            }
        },
    }
    assert statuses(create) == ["201", *ERRORS]
    assert create["responses"]["201"]["links"]["execution"] == {
        "operationId": "getExecution",
        "parameters": {"id": "$response.header.X-Execution-ID"},
    }
    lookup = doc["paths"]["/api/orders/{id}"]["get"]
    assert "requestBody" not in lookup
    assert [(p["name"], p["in"], p["required"]) for p in lookup["parameters"]] == [
        ("id", "path", True),
        ("status", "query", False),  # read by a template: {{ .query.status }}
    ]
    assert statuses(lookup) == ["200", "400", "404", "405", "413", "500", "503", "504"]
    # step.greet is a component's: it may answer with a status of its own.
    assert statuses(doc["paths"]["/api/greet"]["get"]) == ["200", *ERRORS, "default"]
    assert doc["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"]["schema"] == {"type": "string"}


async def test_leading_validate_steps_make_the_body_schema_and_required_query(serve) -> None:
    doc = await document(await serve(CONFIG))
    signup = doc["paths"]["/signup"]["post"]
    present = {"not": {"enum": [None, ""]}}
    assert signup["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "object",
        "required": ["address", "email"],
        "allOf": [
            {
                "type": "object",
                "required": ["email", "address"],
                "properties": {
                    "email": present,
                    "address": {"type": "object", "required": ["city"], "properties": {"city": present}},
                },
            },
            {"required": ["email"], "properties": {"email": {"type": "string"}}},
        ],
    }
    assert [(p["name"], p["in"], p["required"]) for p in signup["parameters"]] == [("ref", "query", True)]


async def test_each_trigger_lists_the_statuses_it_can_answer(serve) -> None:
    paths = (await document(await serve(CONFIG)))["paths"]
    # A default route that ends without step.json_response answers 200 with the data; the other route 202.
    assert statuses(paths["/routed"]["post"]) == ["200", "202", *ERRORS]
    assert statuses(paths["/answered"]["put"]) == ["201", "400", "405", "413", "500", "502", "503", "504"]
    assert statuses(paths["/signup"]["post"]) == ["200", *ERRORS]  # validate and set never answer themselves
    # Async: the pipeline runs later, so its own answers (and 500, 504) never reach this request.
    background = paths["/jobs"]["post"]
    assert statuses(background) == ["202", "400", "405", "413", "503"]
    assert background["responses"]["202"]["links"]["execution"]["parameters"] == {"id": "$response.body#/execution_id"}


async def test_the_admin_document_lists_every_admin_route(make_server) -> None:
    server = await make_server(ORDERS)
    response = await server.admin.get("/api/openapi.json")  # no token: it describes the API, it holds no data
    assert response.status == 200
    doc = await response.json()
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in server.admin.app.router.routes()
        if route.method != hdrs.METH_HEAD and route.resource is not None
    }
    documented = {(method, path) for path, item in doc["paths"].items() for method in item if method != "parameters"}
    assert served == documented  # every route it serves is documented, and nothing it does not serve
    audit = doc["paths"]["/api/audit"]["get"]
    assert [p["name"] for p in audit["parameters"]] == ["component", "actor", "limit", "cursor"]
    entries = audit["responses"]["200"]["content"]["application/json"]["schema"]
    assert entries["required"] == ["entries", "next"]
    assert entries["properties"]["entries"]["items"]["required"] == [
        "id", "at", "actor", "action", "target", "client_address", "detail"
    ]  # fmt: skip
    create = doc["paths"]["/api/dynamic/components"]["post"]
    assert statuses(create) == ["201", "400", "401", "403", "409", "413", "415", "422", "503"]
    item = doc["paths"]["/api/v1/admin/components/{id}"]
    assert statuses(item["put"]) == ["200", "400", "401", "403", "404", "412", "413", "415", "422", "503"]
    assert [p.get("name") for p in item["put"]["parameters"]] == ["If-Match", None]  # None: the CSRF token's $ref
    assert "ETag" in item["get"]["responses"]["200"]["headers"]
    assert "used_by" in item["get"]["responses"]["200"]["content"]["application/json"]["schema"]["required"]
    diff = doc["paths"]["/api/dynamic/components/{id}/diff"]["get"]
    assert [(p["name"], p["required"]) for p in diff["parameters"]] == [("from", True), ("to", True)]
    filters = [p["name"] for p in doc["paths"]["/api/executions"]["get"]["parameters"]]
    assert filters == ["pipeline", "status", "workflow_type", "error", "since", "until", "limit", "before"]
    assert statuses(doc["paths"]["/api/executions/{id}/rerun"]["post"]) == ["201", "401", "403", "404", "409", "503"]
    events = doc["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
    assert list(events) == ["text/event-stream"]
    session = doc["paths"]["/api/session"]
    assert session["post"]["security"] == [] and session["delete"]["security"] == []
    assert "Set-Cookie" in session["post"]["responses"]["200"]["headers"]
    assert doc["security"] == [{"bearer": []}, {"session": []}]
    assert doc["components"]["securitySchemes"]["session"]["in"] == "cookie"
    for public in ("/", "/static/{name}", "/metrics"):
        assert doc["paths"][public]["get"]["security"] == []
