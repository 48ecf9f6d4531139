"""The admin API behind the UI: roles, sessions, audit, history and diffs, If-Match, validate, executions, events."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from yarl import URL

from server.keys import EVENTS, RELOADER
from tests.conftest import (
    ADMIN,
    ROOT,
    SECRET,
    Replica,
    Server,
    free_port,
    hello,
    listening,
    server_command,
    token,
    until,
)
from tests.pipeline_plugin import FLAKY

PREFIX = "/api/dynamic/components"
VIEWER = token("vic", role="viewer")

CONFIG = """
    pipelines:
      hello:
        trigger: {type: http, config: {path: /hello, method: POST}}
        steps:
          - {name: greet, type: step.hello}
          - {name: mark, type: step.set, config: {values: {marked: true, password: "{{ .password }}"}}}
      picky:
        trigger: {type: http, config: {path: /picky, method: POST}}
        steps:
          - {name: check, type: step.validate, config: {strategy: required_fields, required_fields: [x]}}
      notify:
        trigger: {type: http, config: {path: /notify, method: POST}}
        steps:
          - {name: call, type: step.http_call, config: {url: "http://127.0.0.1:9/x"}}
      flaky:
        trigger: {type: http, config: {path: /flaky, method: POST, async: true}}
        steps:
          - {name: flaky, type: test.flaky}
"""

BROKEN = "from server import hookimpl\n\n\ndef oops(:\n    pass\n"


@pytest.fixture
async def server(serve, components: Path) -> Server:
    """A server with the admin API, the test step types and a component `greeter` (v1) providing step.hello."""
    FLAKY["fail"] = True
    started = await serve(CONFIG, strict=False, jwt_secret=SECRET, debounce=0.01, queue_max_attempts=1)
    assert (await call(started, "POST", PREFIX, {"id": "greeter", "source": hello(1)}))[0] == 201
    return started


async def call(
    server: Server, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = ADMIN, **params: str
) -> tuple[int, Any]:
    """One admin API call: the status and the JSON body (None when there is none)."""
    kwargs: dict[str, Any] = {"headers": headers or {}, "params": params}
    if body is not None:
        kwargs["json"] = body
    response = await server.admin.request(method, path, **kwargs)
    text = await response.text()
    return response.status, (json.loads(text) if text else None)


async def recorded(server: Server, execution_id: str) -> dict[str, Any]:
    """The admin API's detail of an execution, once the recorder has written it."""

    async def found() -> Any:
        status, body = await call(server, "GET", f"/api/executions/{execution_id}")
        return body if status == 200 else None

    detail: dict[str, Any] = await until(found)
    return detail


async def next_event(response: ClientResponse, *kinds: str) -> tuple[int, str, dict[str, Any]]:
    """The next event of a Server-Sent Events stream (of one of `kinds`, when given; comments skipped)."""
    fields: dict[str, str] = {}
    async with asyncio.timeout(10):
        while True:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line == "" and "event" in fields:
                if not kinds or fields["event"] in kinds:
                    return int(fields["id"]), fields["event"], json.loads(fields["data"])
                fields = {}
            elif line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value


# --------------------------------------------------------------------------- roles and sessions


async def test_a_viewer_reads_every_new_route_and_writes_none(server: Server) -> None:
    for path in ("/api/audit", f"{PREFIX}/greeter/versions", f"{PREFIX}/greeter/versions/1", "/api/queue/dead"):
        assert (await call(server, "GET", path, headers=VIEWER))[0] == 200, path
    for path, body in (
        (f"{PREFIX}/greeter/validate", {"source": hello(2)}),
        ("/api/executions/x/rerun", {}),
        ("/api/queue/dead/x/retry", {}),
    ):
        assert await call(server, "POST", path, body, headers=VIEWER) == (
            403,
            {"error": "'vic' does not have the 'admin' role"},
        ), path


async def test_a_session_cookie_signs_in_and_its_writes_need_the_csrf_token(server: Server) -> None:
    raw = ADMIN["Authorization"].removeprefix("Bearer ")
    response = await server.admin.post("/api/session", json={"token": raw})
    assert response.status == 200
    session = await response.json()
    assert session["subject"] == "ada" and session["roles"] == ["admin"] and len(session["csrf"]) >= 32
    cookie = response.headers["Set-Cookie"]
    assert "workflow_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # The cookie alone reads (the client keeps it), and shows the same session.
    assert (await call(server, "GET", "/api/session", headers=None))[1] == session
    assert (await call(server, "GET", PREFIX, headers=None))[0] == 200
    # A write with the cookie and no CSRF token is refused and changes nothing; with it, it goes through.
    refused = await call(server, "PUT", f"{PREFIX}/greeter", {"source": hello(2)}, headers=None)
    assert refused == (403, {"error": "a write with the session cookie needs its CSRF token in X-CSRF-Token"})
    assert server.client.app[RELOADER].components["greeter"].version == 1
    status, _ = await call(server, "PUT", f"{PREFIX}/greeter", {"source": hello(2)}, headers={"X-CSRF-Token": "x"})
    assert status == 403
    status, _ = await call(server, "PUT", f"{PREFIX}/greeter", {"source": hello(2)}, headers={"X-CSRF-Token": "é"})
    assert status == 403
    status, body = await call(
        server, "PUT", f"{PREFIX}/greeter", {"source": hello(2)}, headers={"X-CSRF-Token": session["csrf"]}
    )
    assert (status, body["version"]) == (200, 2)
    # Signing out forgets the cookie.
    assert (await call(server, "DELETE", "/api/session", headers=None))[0] == 204
    assert (await call(server, "GET", PREFIX, headers=None))[0] == 401


async def test_a_session_needs_a_valid_token_with_a_role(server: Server) -> None:
    assert (await call(server, "POST", "/api/session", {"token": "nope"}, headers=None))[0] == 401
    assert (await call(server, "POST", "/api/session", {}, headers=None))[0] == 400
    # A hostile body gets the same limits as every admin body: a clear 400 or 415, never a traceback.
    deep = await server.admin.post(
        "/api/session", data="[" * 5000 + "]" * 5000, headers={"Content-Type": "application/json"}
    )
    assert deep.status == 400 and "64" in (await deep.json())["error"]
    text = await server.admin.post("/api/session", data="token", headers={"Content-Type": "text/plain"})
    assert text.status == 415
    raw = token("eve", role="auditor")["Authorization"].removeprefix("Bearer ")
    assert await call(server, "POST", "/api/session", {"token": raw}, headers=None) == (
        403,
        {"error": "'eve' has neither the 'admin' nor the 'viewer' role"},
    )
    viewer = VIEWER["Authorization"].removeprefix("Bearer ")
    status, session = await call(server, "POST", "/api/session", {"token": viewer}, headers=None)
    assert (status, session["roles"]) == (200, ["viewer"])
    # A viewer's session writes nothing, CSRF token or not.
    headers = {"X-CSRF-Token": session["csrf"]}
    assert (await call(server, "PUT", f"{PREFIX}/greeter", {"source": hello(2)}, headers=headers))[0] == 403


async def test_a_session_ends_with_its_token(server: Server) -> None:
    short = token(exp=int(time.time()) + 1)["Authorization"].removeprefix("Bearer ")
    response = await server.admin.post("/api/session", json={"token": short})
    session = await response.json()
    assert response.status == 200 and session["expires_at"] <= time.time() + 1
    cookie = {"Cookie": f"workflow_session={response.cookies['workflow_session'].value}"}
    server.admin.session.cookie_jar.clear()  # the browser would drop it at Max-Age: send it anyway
    await asyncio.sleep(max(0.0, session["expires_at"] - time.time()) + 0.1)
    assert await call(server, "GET", PREFIX, headers=cookie) == (
        401,
        {"error": "the session has expired; sign in again"},
    )


async def test_a_tampered_session_cookie_is_401(server: Server) -> None:
    server.admin.session.cookie_jar.update_cookies({"workflow_session": "e30.AAAA"})
    assert await call(server, "GET", PREFIX, headers=None) == (
        401,
        {"error": "the session cookie is not valid; sign in again"},
    )


# --------------------------------------------------------------------------- history, diff, If-Match, validate


async def test_history_names_who_when_and_where_and_diffs_any_two_versions(server: Server, components: Path) -> None:
    assert (await call(server, "PUT", f"{PREFIX}/greeter", {"source": hello(2)}))[0] == 200
    (components / "greeter.py").write_text(hello(3))
    await until(lambda: server.client.app[RELOADER].components["greeter"].version == 3)
    status, body = await call(server, "GET", f"{PREFIX}/greeter/versions")
    assert status == 200
    assert [(v["version"], v["who"], v["origin"], v["deleted"]) for v in body["versions"]] == [
        (3, "file@local", "file", False),
        (2, "ada", "api", False),
        (1, "ada", "api", False),
    ]
    status, one = await call(server, "GET", f"{PREFIX}/greeter/versions/1")
    assert (status, one["source"], one["version"]) == (200, hello(1), 1)
    status, diff = await call(server, "GET", f"{PREFIX}/greeter/diff", **{"from": "1", "to": "3"})
    assert status == 200 and (diff["added"], diff["removed"]) == (1, 1)
    assert "-VERSION = 1\n+VERSION = 3\n" in diff["diff"]
    assert diff["diff"].startswith("--- greeter.py v1\n+++ greeter.py v3\n")
    assert (await call(server, "GET", f"{PREFIX}/greeter/diff", **{"from": "1", "to": "x"}))[0] == 400
    assert (await call(server, "GET", f"{PREFIX}/greeter/versions/9"))[0] == 404
    assert (await call(server, "GET", f"{PREFIX}/nothing/versions"))[0] == 404
    # Audit entries carry the version they made.
    _, audit = await call(server, "GET", "/api/audit", component="greeter")
    assert [(e["action"], e["detail"]["version"]) for e in audit["entries"]] == [
        ("component.file", 3),
        ("component.update", 2),
        ("component.create", 1),
    ]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        # "²" passes str.isdigit(), yet int() refuses it; a number too large for the store's integer columns.
        (PREFIX + "/greeter/versions/²", {}, 400),
        (PREFIX + "/greeter/versions/99999999999999999999999", {}, 404),
        (PREFIX + "/greeter/diff", {"from": "1", "to": "99999999999999999999999"}, 404),
        (PREFIX + "/greeter/diff", {"from": "²", "to": "1"}, 400),
        ("/api/audit", {"cursor": "²"}, 400),
        ("/api/audit", {"cursor": "99999999999999999999999"}, 400),
        ("/api/audit", {"limit": "²"}, 400),
        ("/api/executions", {"limit": "²"}, 400),
        ("/api/queue/dead", {"limit": "²"}, 400),
        # Valid ISO 8601, but their offsets move them past year 1 or 9999 in UTC.
        ("/api/executions", {"since": "0001-01-01T00:00:00+01:00"}, 400),
        ("/api/executions", {"until": "9999-12-31T23:59:59-01:00"}, 400),
        ("/static/" + "a" * 300, {}, 404),  # a name the file system refuses (ENAMETOOLONG)
    ],
)
async def test_odd_numbers_times_and_names_are_refused_not_a_500(
    server: Server, path: str, params: dict[str, str], status: int
) -> None:
    """What schemathesis sent (and its neighbours): each was a 500 before."""
    answer, body = await call(server, "GET", path, **params)
    assert answer == status, body
    assert len(body["error"]) < 300  # a huge value is clipped, not echoed whole


async def test_a_put_with_a_stale_if_match_is_412_and_changes_nothing(server: Server) -> None:
    response = await server.admin.get(f"{PREFIX}/greeter", headers=ADMIN)
    etag = response.headers["ETag"]
    assert etag == f'"{(await response.json())["sha256"]}"'
    # Someone else saves first.
    assert (await call(server, "PUT", f"{PREFIX}/greeter", {"source": hello(2)}, headers=token("bob")))[0] == 200
    status, body = await call(
        server, "PUT", f"{PREFIX}/greeter", {"source": hello(3)}, headers={**ADMIN, "If-Match": etag}
    )
    assert status == 412 and "changed since you loaded it" in body["error"]
    assert server.client.app[RELOADER].components["greeter"].version == 2
    fresh = (await server.admin.get(f"{PREFIX}/greeter", headers=ADMIN)).headers["ETag"]
    status, body = await call(
        server, "PUT", f"{PREFIX}/greeter", {"source": hello(3)}, headers={**ADMIN, "If-Match": fresh}
    )
    assert (status, body["version"]) == (200, 3)


async def test_validate_runs_the_save_checks_and_changes_nothing(server: Server) -> None:
    path = f"{PREFIX}/greeter/validate"
    status, body = await call(server, "POST", path, {"source": hello(2)})
    assert status == 200 and body["valid"] is True and body["step_types"] == ["step.hello"]
    status, body = await call(server, "POST", path, {"source": BROKEN})
    assert status == 200 and (body["valid"], body["line"]) == (False, 4)
    assert "SyntaxError" in body["error"] or "invalid syntax" in body["error"]
    # Another component may not take a step type that greeter provides: the same clash check as a save.
    status, body = await call(server, "POST", f"{PREFIX}/other/validate", {"source": hello(1)})
    assert status == 200 and body["valid"] is False and "step.hello" in body["error"]
    # Nothing changed: the version, no refusal recorded, no audit entry, no stored version.
    manager = server.client.app[RELOADER]
    assert manager.components["greeter"].version == 1 and manager.failures == {}
    assert [e["action"] for e in (await call(server, "GET", "/api/audit"))[1]["entries"]] == ["component.create"]
    assert (await call(server, "GET", f"{PREFIX}/other/versions"))[0] == 404
    assert (await call(server, "POST", path, {"source": ""}))[0] == 400


async def test_a_component_lists_the_pipelines_that_would_answer_503_without_it(server: Server) -> None:
    status, body = await call(server, "GET", f"{PREFIX}/greeter")
    assert (status, body["used_by"]) == (200, ["hello"])


# --------------------------------------------------------------------------- executions


async def test_an_execution_shows_its_payload_outputs_and_versions_redacted(server: Server) -> None:
    response = await server.client.post("/hello", json={"name": "ann", "password": "hunter2", "nested": {"Token": 1}})
    assert response.status == 200
    detail = await recorded(server, response.headers["X-Execution-ID"])
    assert detail["payload"] == {
        "name": "ann",
        "password": "[redacted]",
        "nested": {"Token": "[redacted]"},
        "params": {},
        "query": {},
    }
    assert [(s["name"], s["type"], s["status"], s["output"]) for s in detail["steps"]] == [
        ("greet", "step.hello", "success", {"version": 1}),
        ("mark", "step.set", "success", {"marked": True, "password": "[redacted]"}),
    ]
    assert detail["components"] == {"greeter": 1}
    assert (detail["redacted"], detail["truncated"], detail["rerun_of"], detail["side_effects"]) == (
        True,
        False,
        None,
        [],
    )
    # The result holds the same data: the secret is hidden there too (a viewer reads this).
    assert detail["result"]["password"] == "[redacted]" and detail["result"]["nested"] == {"Token": "[redacted]"}
    # Sending "[redacted]" on as the password would be wrong: such a payload is not sent again.
    status, body = await call(server, "POST", f"/api/executions/{detail['id']}/rerun")
    assert (status, body["error"]) == (
        409,
        f"execution {detail['id']!r} has redacted values in its payload; it cannot be sent again",
    )


async def test_a_detail_over_the_cap_is_folded_and_cannot_be_rerun(serve, components: Path) -> None:
    server = await serve(CONFIG, strict=False, jwt_secret=SECRET, detail_max_bytes=600)
    response = await server.client.post("/picky", json={"x": 1, "blob": "z" * 5000})
    detail = await recorded(server, response.headers["X-Execution-ID"])
    assert detail["truncated"] is True
    assert detail["payload"]["truncated"] is True and detail["payload"]["preview"].startswith('{"x":1,"blob":"zzz')
    status, body = await call(server, "POST", f"/api/executions/{detail['id']}/rerun")
    assert status == 409 and "no complete recorded payload" in body["error"]


async def test_filters_page_and_rerun_link_the_new_execution(server: Server) -> None:
    ids = []
    for n in range(3):
        response = await server.client.post("/picky", json={"n": n})  # no x: fails validation
        ids.append(response.headers["X-Execution-ID"])
    ok = (await server.client.post("/picky", json={"x": 1})).headers["X-Execution-ID"]
    await recorded(server, ok)
    await until(lambda: all_recorded(server, ids))
    status, page = await call(server, "GET", "/api/executions", pipeline="picky", status="error", limit="2")
    assert status == 200 and [e["id"] for e in page["executions"]] == ids[:0:-1]
    status, rest = await call(server, "GET", "/api/executions", **dict(_query(page["next"])))
    assert [e["id"] for e in rest["executions"]] == ids[:1] and rest["next"] is None
    _, found = await call(server, "GET", "/api/executions", error="REQUIRED", workflow_type="http")
    assert sorted(e["id"] for e in found["executions"]) == sorted(ids)
    # Re-run the successful one: a new `manual` execution linked to it.
    status, rerun = await call(server, "POST", f"/api/executions/{ok}/rerun")
    assert status == 201 and rerun["rerun_of"] == ok and rerun["status"] == "success" and rerun["id"] != ok
    again = await recorded(server, rerun["id"])
    assert (again["workflow_type"], again["rerun_of"], again["payload"]) == (
        "manual",
        ok,
        {"x": 1, "params": {}, "query": {}},
    )
    _, manual = await call(server, "GET", "/api/executions", workflow_type="manual")
    assert [e["id"] for e in manual["executions"]] == [rerun["id"]]
    _, audit = await call(server, "GET", "/api/audit", actor="ada", limit="1")
    assert (audit["entries"][0]["action"], audit["entries"][0]["detail"]) == ("execution.rerun", {"execution": ok})
    assert (await call(server, "POST", "/api/executions/nothing/rerun"))[0] == 404


async def test_side_effect_steps_are_named_for_the_rerun_confirmation(server: Server) -> None:
    response = await server.client.post("/notify", json={"a": 1})
    detail = await recorded(server, response.headers["X-Execution-ID"])
    assert detail["side_effects"] == ["call"]


async def all_recorded(server: Server, ids: list[str]) -> bool:
    for execution_id in ids:
        if (await call(server, "GET", f"/api/executions/{execution_id}"))[0] != 200:
            return False
    return True


def _query(link: str) -> list[tuple[str, str]]:
    """The query arguments of a `next` link."""
    return list(URL(link).query.items())


# --------------------------------------------------------------------------- audit


async def test_the_audit_log_pages_with_a_cursor_and_filters(server: Server) -> None:
    for n in range(2, 5):
        assert (await call(server, "PUT", f"{PREFIX}/greeter", {"source": hello(n)}, headers=token("bob")))[0] == 200
    status, first = await call(server, "GET", "/api/audit", actor="bob", limit="2")
    assert status == 200 and [(e["actor"], e["detail"]["version"]) for e in first["entries"]] == [
        ("bob", 4),
        ("bob", 3),
    ]
    _, second = await call(server, "GET", "/api/audit", **dict(_query(first["next"])))
    assert [e["detail"]["version"] for e in second["entries"]] == [2] and second["next"] is None
    _, everyone = await call(server, "GET", "/api/audit", component="greeter")
    assert [e["actor"] for e in everyone["entries"]] == ["bob", "bob", "bob", "ada"]
    assert (await call(server, "GET", "/api/audit", cursor="abc"))[0] == 400


# --------------------------------------------------------------------------- the event stream


async def test_the_event_stream_carries_changes_refusals_and_dead_letters_and_resumes(server: Server) -> None:
    response = await server.admin.get("/api/events", headers=ADMIN)
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    assert (await call(server, "PUT", f"{PREFIX}/greeter", {"source": hello(2)}))[0] == 200
    first = await next_event(response, "component")
    assert first[1:] == ("component", {**first[2], "kind": "committed", "id": "greeter", "version": 2})
    assert (await call(server, "PUT", f"{PREFIX}/greeter", {"source": BROKEN}))[0] == 422
    refused = await next_event(response, "component")
    assert (refused[1], refused[2]["kind"], refused[2]["line"], refused[2]["origin"]) == (
        "component",
        "refused",
        4,
        "api",
    )
    assert refused[0] > first[0]
    # A dead letter.
    assert (await server.client.post("/flaky", json={})).status == 202
    event = await next_event(response, "dead_letter")
    assert event[2]["pipeline"] == "flaky" and "flaky step failed" in event[2]["error"]
    response.close()
    # Resuming from the first event's id replays what came after it, in order.
    resumed = await server.admin.get("/api/events", headers={**ADMIN, "Last-Event-ID": str(first[0])})
    assert (await next_event(resumed, "component"))[0] == refused[0]
    # An id older than what is kept asks the client to reload.
    reset = await server.admin.get("/api/events", headers={**ADMIN, "Last-Event-ID": "1"})
    assert (await next_event(reset))[1] == "reset"
    # Shutdown ends every stream at once.
    server.admin.app[EVENTS].close()
    async with asyncio.timeout(5):
        assert await resumed.content.read() is not None
    assert resumed.content.at_eof()


async def test_an_idle_stream_gets_heartbeats(server: Server) -> None:
    server.admin.app[EVENTS].heartbeat = 0.05
    response = await server.admin.get("/api/events", headers=VIEWER)
    async with asyncio.timeout(5):
        assert await response.content.readline() == b"retry: 1000\n"
        assert await response.content.readline() == b"\n"
        assert await response.content.readline() == b": heartbeat\n"


async def test_a_file_saved_on_one_replica_reaches_the_other_replicas_stream(start_replica) -> None:
    a: Replica = await start_replica("a")
    b: Replica = await start_replica("b")
    await until(lambda: listening(a))
    await until(lambda: listening(b))
    stream = await b.admin.get("/api/events", headers=ADMIN)
    (a.folder / "hello.py").write_text(hello(1))  # saved on disk on replica a
    _, kind, data = await next_event(stream, "component")
    assert (kind, data["kind"], data["id"], data["version"], data["replica"]) == (
        "component",
        "committed",
        "hello",
        1,
        "b",
    )


async def test_sigterm_closes_open_streams_so_the_stop_never_waits_on_them(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "pipelines:\n  ping:\n    trigger: {type: http, config: {path: /ping}}\n"
        "    steps:\n      - {name: a, type: step.set, config: {values: {a: 1}}}\n"
    )
    port, admin = free_port(), free_port()
    env = {
        **os.environ,
        "JWT_SECRET": SECRET,
        "WORKFLOW_SHUTDOWN_TIMEOUT": "120s",  # a stop waiting on the stream would take this long
        "WORKFLOW_DATA_DIR": str(tmp_path / "data"),
        "WORKFLOW_COMPONENTS_DIR": str(tmp_path / "components"),
    }
    proc = await asyncio.create_subprocess_exec(
        *server_command(config, f"127.0.0.1:{port}", f"127.0.0.1:{admin}"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, port), 20)
        async with session.get(f"http://127.0.0.1:{admin}/api/events", headers=ADMIN) as stream:
            assert await stream.content.readline() == b"retry: 1000\n"
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert await stream.content.read() == b"\n"  # the rest of the first frame, then the end
    assert proc.returncode == 0, err.decode()


async def _ready(session: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


@pytest.mark.parametrize("last", ["\u00b2", "9" * 5000, "-1", "1e3"])
async def test_a_last_event_id_we_did_not_hand_out_starts_afresh(server: Server, last: str) -> None:
    response = await server.admin.get("/api/events", params={"last_id": last}, headers=ADMIN)
    assert (response.status, response.content_type) == (200, "text/event-stream")
    response.close()


async def test_a_stream_ends_when_the_token_that_opened_it_expires(server: Server) -> None:
    server.admin.app[EVENTS].heartbeat = 0.05
    response = await server.admin.get("/api/events", headers=token("ada", exp=int(time.time()) + 2))
    assert response.status == 200
    async with asyncio.timeout(10):
        await response.content.read()  # returns once the server ends the stream
    assert response.content.at_eof()
