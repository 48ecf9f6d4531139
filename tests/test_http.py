"""End-to-end HTTP behaviour of the main and admin listeners."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import pytest
from aiohttp import ClientResponse, web

from server.engine.state import State
from server.hooks.registry import Endpoint, RegistryBuilder
from tests.conftest import metric_value

ECHO = """
pipelines:
  echo:
    trigger: {type: http, config: {path: /echo, method: POST}}
    steps:
      - {name: noop, type: step.set, config: {values: {seen: true}}}
  item:
    trigger: {type: http, config: {path: "/items/{id}", method: GET}}
    steps:
      - name: respond
        type: step.json_response
        config: {body: {id: "{{ .params.id }}", q: "{{ .query.q }}"}}
  item-update:
    trigger: {type: http, config: {path: "/items/{id}", method: PUT}}
    steps:
      - {name: noop, type: step.set, config: {values: {updated: "{{ .params.id }}"}}}
"""


async def answer(request: Awaitable[ClientResponse]) -> tuple[int, Any]:
    """The status and the JSON body of a response."""
    response = await request
    return response.status, await response.json()


async def test_json_body_becomes_data_and_final_data_is_the_answer(make_server):
    srv = await make_server(ECHO)
    response = await srv.client.post("/echo", json={"a": 1, "nested": {"b": [1, 2]}})
    assert response.status == 200
    assert await response.json() == {"a": 1, "nested": {"b": [1, 2]}, "seen": True, "params": {}, "query": {}}
    assert response.headers["X-Execution-ID"]


async def test_form_fields_become_data(make_server):
    srv = await make_server(ECHO)
    response = await srv.client.post("/echo", data={"name": "Ada", "lang": "en"})
    body = await response.json()
    assert (response.status, body["name"], body["lang"]) == (200, "Ada", "en")


async def test_a_multipart_body_without_its_boundary_is_400(make_server):
    # Found by schemathesis (tests/test_openapi_fuzz.py): aiohttp's form parser raised, and the answer was 500.
    srv = await make_server(ECHO)
    response = srv.client.post("/echo", data=b"a=1", headers={"Content-Type": "multipart/form-data"})
    assert await answer(response) == (
        400,
        {"error": "request body is not a valid form: boundary missed for Content-Type: multipart/form-data"},
    )


async def test_path_params_and_query(make_server):
    srv = await make_server(ECHO)
    response = await srv.client.get("/items/42?q=shoes")
    assert await response.json() == {"id": "42", "q": "shoes"}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
async def test_bad_json_is_400(make_server, body, needle):
    srv = await make_server(ECHO)
    response = await srv.client.post("/echo", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert needle in (await response.json())["error"]


async def test_body_over_the_limit_is_413_json(make_server):
    srv = await make_server(ECHO, max_body_bytes=1024)
    response = await srv.client.post("/echo", json={"blob": "x" * 2048})
    assert response.status == 413
    body = await response.json()
    assert "1024" in body["error"]
    assert body["limit"] == 1024
    ok = await srv.client.post("/echo", json={"blob": "x" * 100})
    assert (ok.status, (await ok.json())["blob"]) == (200, "x" * 100)


async def test_wrong_method_is_405_with_allow(make_server):
    srv = await make_server(ECHO)
    response = await srv.client.delete("/items/7")
    assert response.status == 405
    # HEAD runs the GET pipeline, and OPTIONS is answered on every trigger path.
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, PUT"
    assert (await response.json())["allowed"] == ["GET", "HEAD", "OPTIONS", "PUT"]


async def test_unknown_path_is_json_404(make_server):
    srv = await make_server(ECHO)
    response = await srv.client.get("/nowhere")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert "/nowhere" in (await response.json())["error"]


async def test_request_id_is_taken_returned_and_logged(make_server, caplog):
    srv = await make_server(ECHO)
    with caplog.at_level(logging.INFO, logger="workflow"):
        given = await srv.client.post("/echo", json={}, headers={"X-Request-ID": "req-123"})
        generated = await srv.client.post("/echo", json={})
    assert given.headers["X-Request-ID"] == "req-123"
    assert len(generated.headers["X-Request-ID"]) == 36  # a UUID4
    lines = [r for r in caplog.records if r.name == "workflow.http"]
    assert [getattr(r, "request_id", None) for r in lines] == ["req-123", generated.headers["X-Request-ID"]]
    assert lines[0].status == 200
    assert lines[0].route == "/echo"


async def test_metrics_use_route_templates_and_one_unmatched_label(make_server):
    srv = await make_server(ECHO)
    for path in ("/items/1", "/items/2", "/nope/a", "/nope/b"):
        await srv.client.get(path)
    await srv.client.delete("/items/3")
    text = await srv.metrics()
    assert metric_value(text, "http_requests_total", method="GET", path="/items/{id}", status_code="200") == 2
    assert metric_value(text, "http_requests_total", method="GET", path="unmatched", status_code="404") == 2
    assert metric_value(text, "http_requests_total", method="DELETE", path="/items/{id}", status_code="405") == 1
    assert "/items/1" not in text
    assert "/nope/a" not in text
    assert metric_value(text, "http_request_duration_seconds_count", method="GET", path="/items/{id}") == 2
    assert metric_value(text, "workflow_executions_total", workflow_type="http", action="item", status="success") == 2
    assert metric_value(text, "workflow_duration_seconds_count", workflow_type="http", action="item") == 2
    assert (
        metric_value(
            text, "module_operations_total", module="step.json_response", operation="execute", status="success"
        )
        == 2
    )
    assert metric_value(text, "active_workflows", workflow_type="http") == 0
    assert metric_value(text, "workflow_queue_depth") == 0
    assert "process_resident_memory_bytes" in text and "python_info" in text


async def test_metrics_and_health_on_the_admin_listener(make_server):
    srv = await make_server(ECHO)
    await srv.client.post("/echo", json={})
    response = await srv.admin.get("/metrics")
    assert response.status == 200
    assert response.content_type.startswith("text/plain")
    assert metric_value(await response.text(), "http_requests_total", path="/echo", status_code="200") == 1
    for paths, expected in (
        (("/healthz", "/health"), "ok"),
        (("/readyz", "/ready"), "ready"),
        (("/livez", "/live"), "ok"),
    ):
        for path in paths:
            status, body = await answer(srv.admin.get(path))
            assert (status, body["status"]) == (200, expected), path


async def test_health_names_its_checks(make_server):
    srv = await make_server(ECHO)
    body = await (await srv.client.get("/healthz")).json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {
        "config",
        "plugins",
        "queue",
        "components",
        "store",
        "replication",
        "lifecycle",
        "loop",
    }
    loop = body["checks"]["loop"]
    assert loop.pop("max_lag_seconds") < 0.5
    assert loop == {"status": "ok", "threshold_seconds": 0.5, "window_seconds": 60.0}
    assert body["checks"]["store"] == {"status": "ok", "kind": "sqlite", "pending": 0, "dropped": 0}
    assert body["checks"]["replication"]["status"] == "ok"
    assert body["checks"]["replication"]["ready"] is True
    assert body["checks"]["config"]["pipelines"] == 3
    assert body["checks"]["plugins"]["step_types"] >= 9


async def test_readyz_is_not_ready_while_draining(make_server):
    srv = await make_server(ECHO)
    assert await answer(srv.client.get("/readyz")) == (200, {"status": "ready"})
    srv.engine.draining = True
    response = await srv.client.get("/ready")
    assert response.status == 503
    assert await response.json() == {"status": "not ready", "reason": "draining"}
    assert await answer(srv.client.get("/livez")) == (200, {"status": "ok"})


async def test_openapi_lists_the_live_triggers(make_server):
    srv = await make_server(ECHO)
    doc = await (await srv.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]["/items/{id}"]) == {"get", "put"}
    assert doc["paths"]["/items/{id}"]["get"]["parameters"][0]["name"] == "id"
    assert "requestBody" in doc["paths"]["/echo"]["post"]


async def test_unexpected_handler_error_is_json_without_traceback(make_server):
    srv = await make_server(ECHO)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    _add_endpoints(srv.engine, Endpoint("GET", "/webhooks/broken", broken, "tests"))
    response = await srv.client.get("/webhooks/broken")
    assert response.status == 500
    text = await response.text()
    assert "secret internals" not in text
    assert "Traceback" not in text
    assert (await response.json())["error"] == "internal server error"


async def test_webhook_endpoints_dispatch_through_the_swappable_registry(make_server):
    srv = await make_server(ECHO)
    assert await answer(srv.client.post("/webhooks/demo/x")) == (
        404,
        {"error": "no pipeline is triggered by /webhooks/demo/x", "path": "/webhooks/demo/x"},
    )

    async def hook(request: web.Request) -> web.Response:
        return web.json_response({"name": request.match_info["name"], "body": await request.json()})

    _add_endpoints(srv.engine, Endpoint("POST", "/webhooks/demo/{name}", hook, "tests"))
    response = await srv.client.post("/webhooks/demo/x", json={"k": 1})
    assert await response.json() == {"name": "x", "body": {"k": 1}}
    text = await srv.metrics()
    assert metric_value(text, "http_requests_total", path="/webhooks/demo/{name}", status_code="200") == 1
    response = await srv.client.get("/webhooks/demo/x")
    assert (response.status, response.headers["Allow"]) == (405, "POST")
    assert await response.json() == {"error": "method GET is not allowed for /webhooks/demo/x", "allowed": ["POST"]}


async def test_not_ready_engine_refuses_triggers(make_server):
    srv = await make_server(ECHO)
    srv.engine.ready = False
    response = await srv.client.post("/echo", json={})
    assert (response.status, await response.json()) == (503, {"error": "the server is not ready"})


def _add_endpoints(engine, *endpoints: Endpoint) -> None:
    builder = RegistryBuilder(base=engine.registry)
    for endpoint in endpoints:
        builder.add_endpoint(endpoint)
    engine.swap(State(builder.build(), engine.config))
