"""The built-in step types end to end, through real HTTP requests, with their documented config keys."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp import web

from plugins.transform import _convert
from server import ValidationError
from tests.conftest import metric_value, until
from tests.pipeline_plugin import CALLS


def http(name: str, path: str, steps: str) -> str:
    """One pipeline with an HTTP POST trigger; `steps` is its indented step list."""
    return f"""
  {name}:
    trigger: {{type: http, config: {{path: "{path}", method: POST}}}}
    steps:
{steps}"""


# --------------------------------------------------------------------------- step.validate

VALIDATE = (
    "pipelines:"
    + http(
        "fields",
        "/fields",
        """
      - {name: check, type: step.validate, config: {required_fields: [customer.id, total]}}
""",
    )
    + http(
        "schema",
        "/schema",
        """
      - name: check
        type: step.validate
        config:
          strategy: json_schema
          schema:
            type: object
            required: [customer, total]
            properties:
              customer: {type: object, required: [id], properties: {id: {type: integer}}}
              total: {type: number, minimum: 0}
              items: {type: array, items: {type: object, required: [sku]}}
""",
    )
)


@pytest.mark.parametrize(
    ("payload", "missing"),
    [
        ({"customer": {"id": 1}, "total": 0}, None),  # 0 is a value, not a missing field
        ({"total": 5}, ["customer.id"]),
        ({"customer": {"id": ""}}, ["customer.id", "total"]),
        ({"customer": "flat", "total": 1}, ["customer.id"]),
    ],
)
async def test_validate_required_fields_with_nested_dot_paths(serve, payload, missing):
    srv = await serve(VALIDATE)
    response = await srv.client.post("/fields", json=payload)
    body = await response.json()
    if missing is None:
        assert response.status == 200, body
        return
    assert response.status == 400
    assert body["step"] == "check" and body["fields"] == missing
    assert all(name in body["error"] for name in missing)


@pytest.mark.parametrize(
    ("payload", "field", "needle"),
    [
        ({"customer": {"id": 1}, "total": 2.5, "items": [{"sku": "a"}]}, None, None),
        ({"customer": {"id": "x"}, "total": 1}, "customer/id", "is not of type 'integer'"),
        ({"customer": {"id": 1}}, None, "'total' is a required property"),
        ({"customer": {"id": 1}, "total": -1}, "total", "minimum"),
        ({"customer": {"id": 1}, "total": 1, "items": [{"sku": "a"}, {}]}, "items/1", "'sku' is a required property"),
    ],
)
async def test_validate_json_schema_names_the_failing_field(serve, payload, field, needle):
    srv = await serve(VALIDATE)
    response = await srv.client.post("/schema", json=payload)
    body = await response.json()
    if needle is None:
        assert response.status == 200, body
        return
    assert response.status == 400
    assert body["step"] == "check" and needle in body["error"]
    assert body.get("field") == field


# --------------------------------------------------------------------------- step.set and step.log

SET_LOG = (
    "pipelines:"
    + http(
        "set",
        "/set",
        """
      - name: values
        type: step.set
        config:
          values:
            n2: "{{ .n }}"
            f2: "{{ .f }}"
            flag2: "{{ .flag }}"
            obj2: "{{ .obj }}"
            text: "n={{ .n }} flag={{ .flag }}"
            missing: "{{ .nope }}"
            shout: "{{ .name | upper }}"
            literal: 5
            nested: {inner: "{{ .n }}", list: ["{{ .flag }}", x]}
""",
    )
    + http(
        "log",
        "/log",
        """
      - {name: say, type: step.log, config: {message: "hello {{ .name }} #{{ .n }}"}}
      - {name: warn, type: step.log, config: {message: "careful {{ .name }}", level: warning}}
""",
    )
)


async def test_set_renders_values_keeping_their_types(serve):
    srv = await serve(SET_LOG)
    response = await srv.client.post("/set", json={"n": 3, "f": 1.5, "flag": True, "obj": {"a": [1]}, "name": "ada"})
    data = await response.json()
    assert (data["n2"], data["f2"], data["flag2"], data["obj2"]) == (3, 1.5, True, {"a": [1]})
    assert (data["text"], data["shout"], data["literal"]) == ("n=3 flag=true", "ADA", 5)
    assert "missing" in data and data["missing"] is None
    assert data["nested"] == {"inner": 3, "list": [True, "x"]}


async def test_log_writes_the_rendered_message_at_its_level(serve, caplog):
    srv = await serve(SET_LOG)
    with caplog.at_level(logging.DEBUG, logger="workflow.step"):
        response = await srv.client.post("/log", json={"name": "Ada", "n": 7})
    assert (response.status, await response.json()) == (200, {"name": "Ada", "n": 7, "params": {}, "query": {}})
    lines = [
        (r.levelno, r.getMessage(), getattr(r, "pipeline", None), getattr(r, "step", None))
        for r in caplog.records
        if r.name == "workflow.step"
    ]
    assert lines == [(logging.INFO, "hello Ada #7", "log", "say"), (logging.WARNING, "careful Ada", "log", "warn")]


# --------------------------------------------------------------------------- step.transform

TRANSFORM = (
    "pipelines:"
    + http(
        "shape",
        "/shape",
        """
      - name: shape
        type: step.transform
        config:
          extract: {city: customer.address.city, first_sku: items.0.sku, phone: customer.phone}
          map: {from: items, to: skus, fields: {id: sku, n: qty}}
          filter: {from: items, to: large, where: {size: L, color: red}}
          convert: {count: int, ratio: float, active: bool, code: str, rounded: int}
""",
    )
    + http(
        "convert",
        "/convert",
        """
      - {name: conv, type: step.transform, config: {convert: {v: KIND}}}
""",
    )
    + http(
        "listy",
        "/listy",
        """
      - {name: pick, type: step.transform, config: {filter: {from: items, where: {size: L}}}}
""",
    )
)


async def test_transform_extracts_maps_filters_and_converts(serve):
    srv = await serve(TRANSFORM.replace("KIND", "int"))
    items = [
        {"sku": "A", "size": "L", "color": "red", "qty": 2},
        {"sku": "B", "size": "S", "color": "red", "qty": 1},
        {"sku": "C", "size": "L", "color": "blue", "qty": 5},
    ]
    response = await srv.client.post(
        "/shape",
        json={
            "customer": {"address": {"city": "Oslo"}},
            "items": items,
            "count": "3",
            "ratio": "0.5",
            "active": "yes",
            "code": 7,
            "rounded": "3.9",
        },
    )
    data = await response.json()
    assert response.status == 200, data
    assert (data["city"], data["first_sku"], data["phone"]) == ("Oslo", "A", None)
    assert data["skus"] == [{"id": "A", "n": 2}, {"id": "B", "n": 1}, {"id": "C", "n": 5}]
    assert data["large"] == [items[0]]  # every `where` condition must hold
    assert (data["count"], data["ratio"], data["active"], data["code"], data["rounded"]) == (3, 0.5, True, "7", 3)


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("int", '"abc"'),
        ("float", '"1,5"'),
        ("bool", '"maybe"'),
        ("int", '"1.5e400"'),  # int(inf) overflows
        ("int", "[1]"),
    ],
)
async def test_a_bad_conversion_is_400_naming_the_field(serve, kind, raw):
    srv = await serve(TRANSFORM.replace("KIND", kind))
    response = await srv.client.post("/convert", data=f'{{"v": {raw}}}', headers={"Content-Type": "application/json"})
    body = await response.json()
    assert response.status == 400, body
    assert body["step"] == "conv" and body["field"] == "v" and kind in body["error"]


async def test_a_value_that_does_not_convert_is_echoed_short(serve):
    srv = await serve(TRANSFORM.replace("KIND", "int"))
    response = await srv.client.post("/convert", json={"v": "x" * 5000})
    assert (response.status, (await response.json())["error"]) == (400, f'v: cannot convert "{"x" * 62}… to int')
    response = await srv.client.post("/convert", json={"v": {"a": None}})
    assert (await response.json())["error"] == 'v: cannot convert {"a": null} to int'


async def test_filtering_something_that_is_not_a_list_is_400(serve):
    srv = await serve(TRANSFORM.replace("KIND", "int"))
    response = await srv.client.post("/listy", json={"items": "nope"})
    assert response.status == 400
    assert (await response.json())["field"] == "items"


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("42", "int", 42),
        ("4.7", "int", 4),
        (True, "int", 1),
        ("2.5", "float", 2.5),
        (3, "str", "3"),
        ("off", "bool", False),
        ("Y", "bool", True),
        (None, "int", None),
        (False, "bool", False),
    ],
)
def test_convert_rules(value, kind, expected):
    result = _convert("v", value, kind)
    assert result == expected and type(result) is type(expected)


def test_convert_refuses_overflow_as_bad_input():
    with pytest.raises(ValidationError):
        _convert("v", float("inf"), "int")


# --------------------------------------------------------------------------- step.json_response

RESPOND = (
    "pipelines:"
    + http(
        "respond",
        "/respond",
        """
      - {name: prep, type: step.set, config: {values: {total: "{{ .amount }}"}}}
      - name: answer
        type: step.json_response
        config:
          status: 201
          headers: {X-Order: "o-{{ .id }}"}
          body: {id: "{{ .id }}", total: "{{ .total }}", fixed: [1, 2]}
      - {name: later, type: test.record}
""",
    )
    + http(
        "respond-data",
        "/respond-data",
        """
      - {name: answer, type: step.json_response, config: {status: "{{ .code }}"}}
      - {name: later, type: test.record}
""",
    )
    + http(
        "respond-typed",
        "/respond-typed",
        """
      - {name: answer, type: step.json_response, config: {headers: {Content-Type: application/problem+json}}}
""",
    )
)


async def test_json_response_answers_and_ends_the_pipeline(serve):
    srv = await serve(RESPOND)
    response = await srv.client.post("/respond", json={"id": 9, "amount": 10.5})
    assert response.status == 201
    assert response.headers["X-Order"] == "o-9" and response.content_type == "application/json"
    assert await response.json() == {"id": 9, "total": 10.5, "fixed": [1, 2]}
    assert CALLS == []


async def test_json_response_defaults_to_the_data_and_takes_a_templated_status(serve):
    srv = await serve(RESPOND)
    response = await srv.client.post("/respond-data", json={"code": 202})
    assert response.status == 202
    assert await response.json() == {"code": 202, "params": {}, "query": {}}
    assert CALLS == []


async def test_json_response_may_set_its_own_content_type(serve):
    srv = await serve(RESPOND)
    response = await srv.client.post("/respond-typed")
    assert response.status == 200
    assert response.content_type == "application/problem+json"


# --------------------------------------------------------------------------- step.http_call


async def upstream_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        return web.json_response(
            {
                "method": request.method,
                "query": dict(request.query),
                "token": request.headers.get("X-Token"),
                "body": body,
            }
        )

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.json_response({"code": code}, status=code)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="plain words")

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/text", text)
    return app


HTTP_CALL = (
    "pipelines:"
    + http(
        "get",
        "/get",
        """
      - name: call
        type: step.http_call
        config:
          url: UPSTREAM/echo
          query: {q: "{{ .q }}", n: 2}
          headers: {X-Token: "tok-{{ .q }}"}
      - name: pick
        type: step.set
        config: {values: {echoed: "{{ .steps.call.body.query.q }}", code: "{{ .steps.call.status_code }}"}}
""",
    )
    + http(
        "post",
        "/post",
        """
      - name: call
        type: step.http_call
        config: {url: UPSTREAM/echo, method: POST, body: {order: "{{ .order }}", fixed: 1}}
""",
    )
    + http(
        "strict",
        "/strict",
        """
      - {name: call, type: step.http_call, config: {url: "UPSTREAM/status/{{ .code }}"}}
""",
    )
    + http(
        "lenient",
        "/lenient",
        """
      - {name: call, type: step.http_call, config: {url: "UPSTREAM/status/{{ .code }}", fail_on_error: false}}
""",
    )
    + http(
        "slow",
        "/slow",
        """
      - {name: call, type: step.http_call, config: {url: UPSTREAM/slow, timeout: 0.2}}
""",
    )
    + http(
        "text",
        "/text",
        """
      - {name: call, type: step.http_call, config: {url: UPSTREAM/text}}
""",
    )
    + http(
        "refused",
        "/refused",
        """
      - {name: call, type: step.http_call, config: {url: "http://127.0.0.1:1/nothing"}}
""",
    )
)


@pytest.fixture
async def upstream_server(serve, aiohttp_server):
    """A workflow server whose step.http_call steps point at a local upstream."""
    upstream = await aiohttp_server(await upstream_app())
    return await serve(HTTP_CALL.replace("UPSTREAM", str(upstream.make_url("")).rstrip("/")))


async def test_http_call_get_with_query_and_headers(upstream_server):
    response = await upstream_server.client.post("/get", json={"q": "hi"})
    data = await response.json()
    assert response.status == 200, data
    assert data["status_code"] == 200 and data["code"] == 200 and data["echoed"] == "hi"
    assert data["body"] == {"method": "GET", "query": {"q": "hi", "n": "2"}, "token": "tok-hi", "body": None}
    assert data["headers"]["Content-Type"].startswith("application/json")


async def test_http_call_posts_json(upstream_server):
    response = await upstream_server.client.post("/post", json={"order": {"id": 5, "lines": [1, 2]}})
    data = await response.json()
    assert data["body"]["method"] == "POST"
    assert data["body"]["body"] == {"order": {"id": 5, "lines": [1, 2]}, "fixed": 1}


async def test_http_call_keeps_a_non_json_body_as_text(upstream_server):
    data = await (await upstream_server.client.post("/text")).json()
    assert data["body"] == "plain words"


@pytest.mark.parametrize(
    ("path", "code", "status"),
    [
        ("/strict", 404, 502),
        ("/strict", 500, 502),
        ("/strict", 201, 200),
        ("/lenient", 404, 200),
        ("/lenient", 503, 200),
    ],
)
async def test_http_call_error_statuses_fail_unless_told_not_to(upstream_server, path, code, status):
    response = await upstream_server.client.post(path, json={"code": code})
    body = await response.json()
    assert response.status == status, body
    if status == 502:
        assert body["step"] == "call" and body["upstream_status"] == code
    else:
        assert body["status_code"] == code and body["body"] == {"code": code}


@pytest.mark.parametrize(("path", "status"), [("/slow", 504), ("/refused", 502)])
async def test_http_call_timeouts_and_connection_failures(upstream_server, path, status):
    start = time.monotonic()
    response = await upstream_server.client.post(path)
    assert response.status == status
    assert (await response.json())["step"] == "call"
    assert time.monotonic() - start < 2


# --------------------------------------------------------------------------- step.publish

PUBLISH = (
    "pipelines:"
    + http(
        "announce",
        "/announce",
        """
      - {name: pub, type: step.publish, config: {topic: orders.created, payload: {id: "{{ .id }}", source: web}}}
""",
    )
    + http(
        "announce-all",
        "/announce-all",
        """
      - {name: pub, type: step.publish, config: {topic: orders.created}}
""",
    )
    + """
  listener:
    trigger: {type: event, config: {topic: orders.created}}
    steps:
      - {name: heard, type: test.record}
  bystander:
    trigger: {type: event, config: {topic: other.topic}}
    steps:
      - {name: wrong, type: test.record}
"""
)


async def test_publish_runs_the_pipelines_listening_on_the_topic(serve):
    srv = await serve(PUBLISH)
    response = await srv.client.post("/announce", json={"id": 5, "secret": "x"})
    assert (await response.json())["published"] == {"topic": "orders.created", "subscribers": 1}
    await until(lambda: CALLS)
    await until(lambda: _counted(srv, "listener"))
    assert [c["step"] for c in CALLS] == ["heard"]
    assert CALLS[0]["trigger"] == CALLS[0]["data"] == {"id": 5, "source": "web"}


async def test_publish_without_payload_sends_the_data(serve):
    srv = await serve(PUBLISH)
    await srv.client.post("/announce-all", json={"id": 6})
    await until(lambda: CALLS)
    assert CALLS[0]["data"]["id"] == 6


async def _counted(srv, action: str) -> bool:
    return (
        metric_value(
            await srv.metrics(), "workflow_executions_total", workflow_type="event", action=action, status="success"
        )
        == 1
    )


# --------------------------------------------------------------------------- step.delegate

DELEGATE = (
    "pipelines:"
    + http(
        "main",
        "/delegate",
        """
      - {name: sub, type: step.delegate, config: {pipeline: helper, input: {n: "{{ .n }}"}}}
      - {name: after, type: step.set, config: {values: {after: "{{ .greeting }}"}}}
""",
    )
    + http(
        "keyed",
        "/delegate-keyed",
        """
      - {name: sub, type: step.delegate, config: {pipeline: helper, input: {n: "{{ .n }}"}, output: helped}}
""",
    )
    + http(
        "to-responder",
        "/delegate-responder",
        """
      - {name: sub, type: step.delegate, config: {pipeline: responder, output: answer}}
""",
    )
    + http(
        "to-failing",
        "/delegate-failing",
        """
      - {name: sub, type: step.delegate, config: {pipeline: failing}}
""",
    )
    + http(
        "forever",
        "/recurse",
        """
      - {name: again, type: step.delegate, config: {pipeline: forever}}
""",
    )
    + """
  helper:
    trigger: {type: manual}
    steps:
      - {name: greet, type: step.set, config: {values: {greeting: "hi {{ .n }}", from_trigger: "{{ .trigger.n }}"}}}
  responder:
    trigger: {type: manual}
    steps:
      - {name: reply, type: step.json_response, config: {status: 201, body: {answered: true}}}
  failing:
    trigger: {type: manual}
    steps:
      - {name: check, type: step.validate, config: {required_fields: [nothing_here]}}
"""
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/delegate", {"n": 3, "greeting": "hi 3", "from_trigger": 3, "after": "hi 3"}),
        ("/delegate-keyed", {"n": 3, "helped": {"n": 3, "greeting": "hi 3", "from_trigger": 3}}),
        ("/delegate-responder", {"n": 3, "answer": {"answered": True}}),
    ],
)
async def test_delegate_runs_another_pipeline_and_takes_its_result(serve, path, expected):
    srv = await serve(DELEGATE)
    response = await srv.client.post(path, json={"n": 3})
    data = await response.json()
    assert response.status == 200, data
    assert {k: v for k, v in data.items() if k not in ("params", "query")} == expected


async def test_a_delegated_failure_fails_the_delegating_step(serve):
    srv = await serve(DELEGATE)
    response = await srv.client.post("/delegate-failing")
    body = await response.json()
    assert response.status == 400
    assert body["step"] == "sub" and body["delegated_step"] == "check" and "nothing_here" in body["error"]


async def test_delegation_recursion_is_stopped(serve):
    srv = await serve(DELEGATE)
    start = time.monotonic()
    response = await asyncio.wait_for(srv.client.post("/recurse"), 10)
    body = await response.json()
    assert response.status == 500 and body["step"] == "again"
    assert "deeper than" in body["error"]
    assert time.monotonic() - start < 5
    metrics = await srv.metrics()
    assert metric_value(metrics, "active_workflows", workflow_type="http") == 0
    # every level of the recursion finished, each counted as a failure
    assert (
        metric_value(metrics, "workflow_executions_total", workflow_type="http", action="forever", status="error") == 9
    )
