"""Hostile or careless requests: every one gets a clear 4xx, the server keeps serving, and no traceback is logged."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from typing import Any

import pytest

from server import jsonbody
from server.settings import SettingsError, from_environment

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
        config: {status: 201, body: {id: "{{ .params.id }}"}}
  item-update:
    trigger: {type: http, config: {path: "/items/{id}", method: PUT}}
    steps:
      - {name: noop, type: step.set, config: {values: {updated: "{{ .params.id }}"}}}
"""
JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> bytes:
    """A JSON object nested `depth` levels deep (the outermost object is level 1)."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """No record of the test carries a traceback."""
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.exc_text] == []


async def post(srv: Any, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = await srv.client.post("/echo", data=body, headers=JSON if headers is None else headers)
    return response.status, await response.json()


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
async def test_json_nested_past_the_limit_is_400_naming_it(make_server, caplog, depth):
    srv = await make_server(ECHO)
    status, body = await post(srv, nested(depth))
    assert status == 400
    assert body == {"error": "request body: JSON nested deeper than the limit of 64 levels (WORKFLOW_MAX_JSON_DEPTH)"}
    no_tracebacks(caplog)


async def test_json_at_the_limit_is_read_and_the_limit_is_a_setting(make_server):
    srv = await make_server(ECHO)
    status, body = await post(srv, nested(64))
    assert (status, body["seen"]) == (200, True)
    # Brackets inside strings nest nothing.
    status, body = await post(srv, b'{"s": "' + b"[" * 500 + b'\\"{{{"}')
    assert (status, body["s"]) == (200, "[" * 500 + '"{{{')
    srv = await make_server(ECHO, max_json_depth=8)  # the config itself nests 7 levels
    assert (await post(srv, nested(8)))[0] == 200
    assert (await post(srv, nested(9)))[1]["error"].endswith(
        "deeper than the limit of 8 levels (WORKFLOW_MAX_JSON_DEPTH)"
    )


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"total": NaN}', "request body: NaN is not a JSON number"),
        (b'{"total": Infinity}', "request body: Infinity is not a JSON number"),
        (b'{"total": -Infinity}', "request body: -Infinity is not a JSON number"),
        (b'{"total": 1e400}', "request body: the number 1e400 is out of range"),
        (b'{"total": -1' + b"0" * 400 + b".5}", "request body: the number -1" + "0" * 30 + " is out of range"),
        (b'{"total": ' + b"9" * 4301 + b"}", "request body: a number has more than 4300 digits"),
        (b"[1, 2]", "request body must be a JSON object, not an array"),
        (b'"text"', "request body must be a JSON object, not a string"),
        (b"null", "request body must be a JSON object, not null"),
        (
            b"{not json",
            "request body: not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2",
        ),
        (b"\xff\xfe\xfd", "request body: not valid JSON: the text is not UTF-8"),
    ],
)
async def test_numbers_and_shapes_json_cannot_carry_are_400(make_server, caplog, raw, error):
    srv = await make_server(ECHO)
    assert await post(srv, raw) == (400, {"error": error})
    no_tracebacks(caplog)


async def test_a_big_integer_within_the_limit_is_kept_exactly(make_server):
    srv = await make_server(ECHO)
    status, body = await post(srv, b'{"n": ' + b"7" * 4300 + b"}")
    assert (status, body["n"]) == (200, int("7" * 4300))


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", (200, "json")),
        ("application/json; charset=utf-8", (200, "json")),
        ("application/vnd.api+json", (200, "json")),
        (None, (200, "json")),
        ("text/plain", (415, "a body of type text/plain is not read")),
        ("application/octet-stream", (415, "a body of type application/octet-stream is not read")),
        ("application/json-seq", (415, "a body of type application/json-seq is not read")),
    ],
)
async def test_one_rule_for_which_content_types_are_read(make_server, content_type, expected):
    srv = await make_server(ECHO)
    headers = {} if content_type is None else {"Content-Type": content_type}
    # skip_auto_headers: without a type the client would add application/octet-stream itself.
    response = await srv.client.post(
        "/echo", data=b'{"kind": "json"}', headers=headers, skip_auto_headers=["Content-Type"]
    )
    body = await response.json()
    if expected[0] == 200:
        assert (response.status, body["kind"]) == expected
    else:
        assert response.status == 415
        assert body["error"].startswith(expected[1])
        assert body["accepted"] == ("application/json, application/x-www-form-urlencoded or multipart/form-data")


async def test_a_form_post_is_still_read_as_fields(make_server):
    srv = await make_server(ECHO)
    response = await srv.client.post("/echo", data={"name": "Ada"})
    assert (response.status, (await response.json())["name"]) == (200, "Ada")


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
async def test_a_gzip_body_is_limited_by_its_decompressed_size(make_server, caplog, content_type):
    srv = await make_server(ECHO, max_body_bytes=64 * 1024)
    inner = b'{"a": "' + b"x" * (8 * 1024 * 1024) + b'"}' if "json" in content_type else b"a=" + b"x" * 8 * 1024 * 1024
    wire = gzip.compress(inner)
    assert len(wire) < 64 * 1024  # under the limit on the wire, 128 times over it decompressed
    response = await srv.client.post(
        "/echo", data=wire, headers={"Content-Type": content_type, "Content-Encoding": "gzip"}
    )
    assert response.status == 413
    assert await response.json() == {
        "error": "request body is larger than the limit of 65536 bytes",
        "limit": 65536,
    }
    small = gzip.compress(b'{"a": "b"}')
    response = await srv.client.post("/echo", data=small, headers={**JSON, "Content-Encoding": "gzip"})
    assert (response.status, (await response.json())["a"]) == (200, "b")
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("POST", "/openapi.json", "GET, HEAD"),
        ("DELETE", "/executions/abc", "GET, HEAD"),
    ],
)
async def test_other_methods_on_fixed_paths_are_405_with_allow(make_server, method, path, allow):
    srv = await make_server(ECHO)
    # The admin listener has the health paths and /metrics too (and answered 405 already).
    for client in (srv.client, srv.admin) if path.endswith(("z", "metrics")) else (srv.client,):
        response = await client.request(method, path)
        assert (response.status, response.headers["Allow"]) == (405, allow), client
        assert response.content_type == "application/json"


async def test_head_runs_the_get_pipeline_and_drops_the_body(make_server):
    srv = await make_server(ECHO)
    response = await srv.client.head("/items/7")
    assert response.status == 201
    assert await response.read() == b""
    assert response.headers["X-Execution-ID"]
    text = await srv.metrics()
    assert 'workflow_executions_total{action="item",status="success",workflow_type="http"} 1.0' in text


async def test_options_answers_allow_and_other_methods_405_lists_them(make_server):
    srv = await make_server(ECHO)
    response = await srv.client.options("/items/7")
    assert (response.status, response.headers["Allow"]) == (204, "GET, HEAD, OPTIONS, PUT")
    response = await srv.client.options("/echo")
    assert (response.status, response.headers["Allow"]) == (204, "OPTIONS, POST")
    response = await srv.client.head("/echo")
    assert (response.status, response.headers["Allow"]) == (405, "OPTIONS, POST")
    response = await srv.client.delete("/items/7")
    assert (response.status, response.headers["Allow"]) == (405, "GET, HEAD, OPTIONS, PUT")
    assert await response.json() == {
        "error": "method DELETE is not allowed for this path",
        "allowed": ["GET", "HEAD", "OPTIONS", "PUT"],
    }
    assert (await srv.client.options("/nowhere")).status == 404


async def test_ids_echoed_in_errors_are_capped(make_server):
    srv = await make_server(ECHO)
    long_id = "x" * 5000
    response = await srv.client.get(f"/executions/{long_id}")
    body = await response.json()
    assert response.status == 404
    assert body == {"error": f"no execution {'x' * 127 + '…'!r} (unknown, or expired from history)"}
    response = await srv.client.get("/" + "p" * 5000)
    body = await response.json()
    assert response.status == 404
    assert body == {"error": f"no pipeline is triggered by /{'p' * 126}…", "path": f"/{'p' * 126}…"}


async def raw_request(srv: Any, data: bytes) -> bytes:
    """Send raw bytes to the main listener and read the whole answer (the server closes the connection)."""
    reader, writer = await asyncio.open_connection(srv.client.server.host, srv.client.server.port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "more than 8190 bytes"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", "more than 8190 bytes"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(200)) + b"\r\n", "headers"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n", "header"),
    ],
)
async def test_requests_aiohttp_refuses_are_one_log_line_without_traceback(make_server, caplog, request_bytes, reason):
    srv = await make_server(ECHO)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        answer = await raw_request(srv, request_bytes)
    # aiohttp answers these itself, before any middleware, as text (see the README); the status is what counts.
    assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.0 400 Bad Request"
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert (lines[0].levelno, lines[0].exc_info) == (logging.WARNING, None)
    assert lines[0].getMessage().startswith("refused a malformed request (400): ")
    assert reason.lower() in lines[0].getMessage().lower()
    no_tracebacks(caplog)
    # and the server keeps serving
    response = await srv.client.post("/echo", json={"a": 1})
    assert response.status == 200


def test_the_limits_are_settings_that_name_themselves_when_wrong():
    assert (from_environment({}).max_json_depth, from_environment({}).jwt_max_lifetime) == (64, 86400.0)
    settings = from_environment({"WORKFLOW_MAX_JSON_DEPTH": "10", "JWT_MAX_LIFETIME": "15m"})
    assert (settings.max_json_depth, settings.jwt_max_lifetime) == (10, 900.0)
    with pytest.raises(SettingsError, match="WORKFLOW_MAX_JSON_DEPTH: '0' is not a positive whole number"):
        from_environment({"WORKFLOW_MAX_JSON_DEPTH": "0"})
    with pytest.raises(SettingsError, match="JWT_MAX_LIFETIME: 'forever' is not a duration"):
        from_environment({"JWT_MAX_LIFETIME": "forever"})


async def test_a_body_that_does_not_decompress_is_400_without_traceback(make_server, caplog):
    srv = await make_server(ECHO)
    response = await srv.client.post("/echo", data=b"not gzip at all", headers={**JSON, "Content-Encoding": "gzip"})
    assert (response.status, await response.json()) == (
        400,
        {"error": "the request body cannot be read: Can not decode content-encoding: gzip"},
    )
    assert response.headers["Connection"] == "close"  # what is left of the body cannot be told from a request
    no_tracebacks(caplog)
    response = await srv.client.post("/echo", json={"a": 1})
    assert response.status == 200


@pytest.mark.parametrize(
    ("raw", "too_deep"),
    [
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b'["[", "]", ' + b"[" * 63 + b"]" * 63 + b"]", False),  # brackets in strings nest nothing
        (b'["]]]", ' + b"[" * 64 + b"]" * 64 + b"]", True),  # nor do they close anything
        (b'["\\\\", ' + b"[" * 64 + b"]" * 64 + b"]", True),  # an escaped backslash does not escape the quote
        (b'["\\"[[[", ' + b"[" * 63 + b"]" * 63 + b"]", False),  # an escaped quote does not end the string
        (b'{"": "", "a": "[[[[", "b": [' + b"{}," * 100 + b"{}]}", False),
    ],
)
def test_the_depth_scan_reads_strings_as_json_does(raw, too_deep):
    assert jsonbody.depth_exceeds(raw, 64) is too_deep
    json.loads(raw)  # each case is valid JSON


async def test_a_multipart_body_without_its_boundary_is_400(make_server, caplog):
    srv = await make_server(ECHO)
    response = await srv.client.post("/echo", data=b"a=1", headers={"Content-Type": "multipart/form-data"})
    body = await response.json()
    assert response.status == 400
    assert body["error"].startswith("request body is not a valid form: ")
    no_tracebacks(caplog)


def test_utf16_and_utf32_bodies_are_held_to_the_depth_limit_too():
    # U+225B is the bytes 5B 22 in UTF-16-LE, '[' and '"' to a scan of the raw bytes: it must not hide the nesting.
    deep = '["\u225b", ' + "[" * 600 + "]" * 600 + "]"
    for encoding in ("utf-16-le", "utf-16-be", "utf-16", "utf-32"):
        with pytest.raises(jsonbody.JSONBodyError, match="deeper than the limit of 64 levels"):
            jsonbody.loads(deep.encode(encoding), 64)
    assert jsonbody.loads('{"a": ["\u225b"]}'.encode("utf-16"), 64) == {"a": ["\u225b"]}
