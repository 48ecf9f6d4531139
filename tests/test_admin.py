"""The admin API and page, end to end through the real admin listener (and the main listener it changes)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from server.cluster import replicator as replicator_module
from server.cluster.bases import SYNC_FILE
from server.keys import RELOADER, REPLICATOR
from server.settings import from_environment
from server.store import Retention
from tests.conftest import ADMIN, SECRET, Server, hello, metric_value, token, until
from tests.hub import HUB

PREFIXES = ("/api/dynamic/components", "/api/v1/admin/components")

CONFIG = """\
pipelines:
  hello:
    trigger: {type: http, config: {path: /hello, method: GET}}
    steps:
      - {name: hello, type: step.hello}
  ok:
    trigger: {type: http, config: {path: /ok, method: POST}}
    steps:
      - {name: mark, type: step.set, config: {values: {marked: true}}}
      - {name: respond, type: step.json_response, config: {status: 200, body: {marked: "{{ .marked }}"}}}
    on_error: compensate
    compensation:
      - {name: undo, type: step.log, config: {message: undo}}
  picky:
    trigger: {type: http, config: {path: /picky, method: POST}}
    steps:
      - {name: check, type: step.validate, config: {strategy: required_fields, required_fields: [x]}}
      - {name: done, type: step.set, config: {values: {done: true}}}
"""


@pytest.fixture(autouse=True)
def hub() -> None:
    HUB.clear()  # the gate of `hello(wait=True)`


@pytest.fixture
def start(make_server) -> Callable[..., Awaitable[Server]]:
    """A server with the admin API enabled and a tiny watcher debounce."""

    async def start(config: str = CONFIG, **overrides: Any) -> Server:
        overrides.setdefault("jwt_secret", SECRET)
        overrides.setdefault("debounce", 0.01)
        return await make_server(config, **overrides)

    return start


async def call(
    server: Server, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = ADMIN, **params: str
) -> tuple[int, Any]:
    """One admin API call: the status and the JSON body (None when there is none)."""
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if body is not None:
        kwargs["json"] = body
    if params:
        kwargs["params"] = params
    response = await server.admin.request(method, path, **kwargs)
    text = await response.text()
    if response.status != 204:
        assert response.content_type == "application/json", (response.status, text)
    return response.status, (await response.json() if text else None)


async def hello_answer(server: Server) -> tuple[int, Any]:
    response = await server.client.get("/hello")
    return response.status, await response.json()


async def serves(server: Server, version: int) -> bool:
    status, body = await hello_answer(server)
    return status == 200 and body["version"] == version


def dynamic(text: str, operation: str, status: str = "success") -> float:
    return metric_value(text, "module_operations_total", module="dynamic", operation=operation, status=status)


def listed(components: Path) -> list[Path]:
    """The folder's entries, except the replicator's record of what the folder last agreed with the store."""
    return [p for p in components.iterdir() if Path(SYNC_FILE).stem not in p.name]  # the file or its temp


def leftovers(components: Path) -> list[str]:
    """Anything in the components folder besides real component files (temp files from the API)."""
    return sorted(p.name for p in listed(components) if p.name.startswith("."))


class Syncs:
    """Observes the real watcher: the file name of each change it has finished applying (or found in service)."""

    def __init__(self, server: Server) -> None:
        replicator = server.client.app[REPLICATOR]
        self.done: list[str] = []
        original = replicator.file_changed

        async def observed(path: Any, *args: Any) -> Any:
            try:
                return await original(path, *args)
            finally:
                self.done.append(Path(path).name)

        replicator.file_changed = observed  # type: ignore[method-assign]  # the watcher looks it up per change

    async def wait(self, count: int) -> None:
        """Until the watcher has finished `count` changes in all."""
        await until(lambda: len(self.done) >= count)


async def audit_actions(server: Server, target: str) -> list[tuple[str, str]]:
    """(who, action) of the audit entries for `target`, oldest first."""
    return [(row.who, row.action) for row in reversed(await server.store.list_audit(target=target))]


# --------------------------------------------------------------------------- auth and the page

ROUTES = [
    (method, prefix + tail)
    for prefix in PREFIXES
    for method, tail in (("GET", ""), ("POST", ""), ("GET", "/x"), ("PUT", "/x"), ("DELETE", "/x"))
]
ROUTES += [("GET", "/api/executions"), ("GET", "/api/executions/x"), ("GET", "/api/pipelines")]


async def test_every_api_route_wants_a_token_and_writes_the_admin_role(start, components) -> None:
    server = await start()
    (components / "x.py").write_text(hello(1))
    await until(lambda: "x" in server.client.app[RELOADER].components)
    await until(lambda: audit_actions(server, "x"))  # the file's own entry is written after it serves
    for method, path in ROUTES:
        body = {"id": "y", "source": hello(1)} if method == "POST" else {"source": hello(2)}
        status, answer = await call(server, method, path, body, headers=None)
        assert status == 401 and "bearer token" in answer["error"], (method, path)
        status, answer = await call(server, method, path, body, headers=token("bob", role="viewer"))
        if method == "GET":  # a viewer reads everything (CONTRACT §6)
            assert status == (404 if path == "/api/executions/x" else 200), (method, path, answer)
        else:
            assert (status, answer) == (403, {"error": "'bob' does not have the 'admin' role"}), (method, path)
        status, answer = await call(server, method, path, body, headers=token("eve", role="auditor"))
        wanted = "'admin' or 'viewer'" if method == "GET" else "'admin'"
        assert (status, answer) == (403, {"error": f"'eve' does not have the {wanted} role"}), (method, path)
        status, answer = await call(server, method, path, body, headers=token(secret="w" * 40))
        assert status == 401, (method, path)
    # Nothing was changed by any of the refused calls.
    assert sorted(p.name for p in listed(components)) == ["x.py"]
    assert (components / "x.py").read_text() == hello(1)
    assert await serves(server, 1)
    assert [(a.who, a.action) for a in await server.store.list_audit()] == [("file@local", "component.file")]


async def test_without_a_secret_every_api_route_is_503_but_the_page_is_served(start) -> None:
    server = await start(jwt_secret=None)
    for method, path in ROUTES:
        status, answer = await call(server, method, path, {"id": "y", "source": hello(1)})
        assert status == 503 and "admin API is disabled" in answer["error"], (method, path)
    page = await server.admin.get("/")
    assert page.status == 200 and page.content_type == "text/html"


async def test_the_admin_page_is_served_without_a_token(start) -> None:
    server = await start()
    page = await server.admin.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    text = await page.text()
    assert "workflow-server admin" in text and '<script src="/static/app.js"></script>' in text
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"
    # A strict CSP: no inline script or style, nothing from another origin; the page's files come from the package.
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "unsafe" not in csp
    assert "<script>" not in text and " style=" not in text
    for name, kind in (
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("vendor/codemirror/codemirror.js", "text/javascript"),
        ("vendor/codemirror/LICENSE", "application/octet-stream"),
    ):
        response = await server.admin.get(f"/static/{name}")
        assert (response.status, response.content_type) == (200, kind), name
    assert "/api/dynamic/components" in await (await server.admin.get("/static/app.js")).text()
    for bad in ("../__init__.py", "vendor/../../auth.py", ".hidden", "nothing.js"):
        assert (await server.admin.get(f"/static/{bad}")).status == 404, bad
    # The admin API is not on the main listener.
    response = await server.client.get("/api/pipelines", headers=ADMIN)
    assert (response.status, await response.json()) == (
        404,
        {"error": "no pipeline is triggered by /api/pipelines", "path": "/api/pipelines"},
    )


# --------------------------------------------------------------------------- create, update, delete


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_create_update_delete_lifecycle(start, components, prefix) -> None:
    server = await start()
    syncs = Syncs(server)
    assert (await hello_answer(server))[0] == 503

    status, body = await call(server, "POST", prefix, {"id": "hello", "source": hello(1)})
    assert status == 201, body
    assert body["id"] == "hello" and body["status"] == "serving" and body["version"] == 1
    assert body["step_types"] == ["step.hello"] and body["last_error"] is None
    assert (components / "hello.py").read_text() == hello(1)
    assert leftovers(components) == []
    assert await serves(server, 1)  # at once: no waiting for the watcher
    row = await server.store.get_component("hello")
    assert (row.version, row.source, row.sha256, row.updated_by, row.deleted) == (
        1,
        hello(1),
        body["sha256"],
        "ada",
        False,
    )
    assert await audit_actions(server, "hello") == [("ada", "component.create")]

    status, body = await call(server, "POST", prefix, {"id": "hello", "source": hello(9)})
    assert status == 409 and "PUT" in body["error"]
    assert await serves(server, 1) and (components / "hello.py").read_text() == hello(1)

    # The watcher sees the API's rename, finds the version it already serves, and does not load it again.
    await syncs.wait(1)
    after_create = await server.metrics()
    assert syncs.done == ["hello.py"]
    assert (dynamic(after_create, "file_change"), dynamic(after_create, "load"), dynamic(after_create, "reload")) == (
        1,
        1,
        0,
    )

    for version in (2, 3):
        status, body = await call(server, "PUT", f"{prefix}/hello", {"source": hello(version)})
        assert status == 200, body
        assert body["version"] == version and body["status"] == "serving"
        assert await serves(server, version)
        assert (components / "hello.py").read_text() == hello(version)
        await syncs.wait(version)
        after = await server.metrics()
        assert (dynamic(after, "file_change"), dynamic(after, "reload"), dynamic(after, "reload", "error")) == (
            version,
            version - 1,
            0,
        )
        assert server.client.app[RELOADER].components["hello"].version == version
    assert leftovers(components) == []
    assert (await server.store.get_component("hello")).version == 3

    status, body = await call(server, "DELETE", f"{prefix}/hello")
    assert (status, body) == (204, None)
    assert not (components / "hello.py").exists()
    status, answer = await hello_answer(server)
    assert status == 503 and "'step.hello'" in answer["error"]
    row = await server.store.get_component("hello")
    assert row.deleted is True and row.updated_by == "ada" and row.version == 4
    assert await audit_actions(server, "hello") == [
        ("ada", "component.create"),
        ("ada", "component.update"),
        ("ada", "component.update"),
        ("ada", "component.delete"),
    ]
    assert (await call(server, "GET", f"{prefix}/hello"))[0] == 404
    assert (await call(server, "DELETE", f"{prefix}/hello"))[0] == 404
    assert (await call(server, "PUT", f"{prefix}/hello", {"source": hello(4)}))[0] == 404
    await syncs.wait(4)  # the watcher sees the deletion: nothing left to unregister, nothing comes back
    after = await server.metrics()
    assert (dynamic(after, "file_change"), dynamic(after, "unregister")) == (4, 1)
    assert (await hello_answer(server))[0] == 503 and not (components / "hello.py").exists()

    # Created again after a delete: its version goes on from the store's history.
    status, body = await call(server, "POST", prefix, {"id": "hello", "source": hello(5)})
    assert status == 201 and body["version"] == 5 and await serves(server, 5)
    assert (await server.store.get_component("hello")).version == 5


BROKEN = [
    pytest.param("from server import hookimpl\n\n\ndef broken(:\n    pass\n", 4, "syntax error", id="syntax"),
    pytest.param(
        "from server import hookimpl\nimport no_such_module_for_the_admin_test\n", 2, "ModuleNotFoundError", id="import"
    ),
    pytest.param(hello(7, step="step.set"), 11, "already registered by plugins.core", id="clash-with-built-in"),
    pytest.param(
        "from server import hookimpl\n\n\ndef nothing(ctx):\n    return None\n",
        None,
        "no hook implementations",
        id="no-hooks",
    ),
]


@pytest.mark.parametrize(("source", "line", "needle"), BROKEN)
async def test_a_broken_source_is_422_and_changes_nothing(start, components, source, line, needle) -> None:
    server = await start()
    syncs = Syncs(server)
    assert (await call(server, "POST", PREFIXES[0], {"id": "hello", "source": hello(1)}))[0] == 201
    row = await server.store.get_component("hello")
    await syncs.wait(1)  # done with the new file: its sync would clear the error shown below (file == service)

    status, body = await call(server, "PUT", PREFIXES[1] + "/hello", {"source": source})
    assert status == 422, body
    assert needle in body["error"] and body.get("line") == line  # no line when none applies
    assert await serves(server, 1)
    assert (components / "hello.py").read_text() == hello(1) and leftovers(components) == []
    assert await server.store.get_component("hello") == row
    assert await audit_actions(server, "hello") == [("ada", "component.create")]
    assert (
        "step.set" in server.engine.registry.steps
        and server.engine.registry.steps["step.set"].provider != "component:hello"
    )
    # The refused version is visible on the one in service.
    status, detail = await call(server, "GET", PREFIXES[0] + "/hello")
    assert detail["status"] == "serving" and detail["version"] == 1 and detail["source"] == hello(1)
    assert needle in detail["last_error"]["error"] and detail["last_error"]["line"] == line

    # Refused as a new component too: no file, no store row, and no trace of a component that never was.
    status, body = await call(server, "POST", PREFIXES[0], {"id": "other", "source": source})
    assert status == 422 and needle in body["error"] and body.get("line") == line
    assert not (components / "other.py").exists() and leftovers(components) == []
    assert await server.store.get_component("other") is None
    assert (await call(server, "GET", PREFIXES[0] + "/other"))[0] == 404
    assert [c["id"] for c in (await call(server, "GET", PREFIXES[1]))[1]["components"]] == ["hello"]
    # ... and it can be created once fixed.
    assert (await call(server, "POST", PREFIXES[0], {"id": "other", "source": hello(2, step="step.other")}))[0] == 201


@pytest.mark.parametrize(
    "bad", ["Bad-ID!", "a" * 65, "", "../x", "x/y", "x.py", ".x", "abc\n", 7, None, "_private", "_"]
)
async def test_bad_component_ids_are_400(start, components, bad) -> None:
    server = await start()
    for prefix in PREFIXES:
        status, body = await call(server, "POST", prefix, {"id": bad, "source": hello(1)})
        assert status == 400 and body["field"] == "id", (prefix, body)
        if isinstance(bad, str) and bad:  # the rule itself is in the answer: the watcher's, to the letter
            assert body["rule"] == "[a-z0-9][a-z0-9_]{0,63}", body
            assert body["error"] == (
                f"component ids are 1-64 characters of a-z, 0-9 and _, starting with a letter or digit, not {bad!r}"
            )
    assert listed(components) == [] and "step.hello" not in server.engine.registry.steps
    assert await server.store.list_components(include_deleted=True) == []


@pytest.mark.parametrize("bad", ["Bad-ID!", "a" * 65, "x.py", "..%2Fx", "abc%0A", "%2E%2E"])
async def test_bad_component_ids_in_the_path_are_400(start, components, bad) -> None:
    server = await start()
    (components / "x.py").write_text(hello(1))
    await until(lambda: "x" in server.client.app[RELOADER].components)
    for prefix in PREFIXES:
        for method in ("GET", "PUT", "DELETE"):
            response = await server.admin.request(
                method, URL(f"{prefix}/{bad}", encoded=True), headers=ADMIN, json={"source": hello(2)}
            )
            assert response.status == 400, (method, prefix, await response.text())
            assert (await response.json())["field"] == "id"
    assert sorted(p.name for p in listed(components)) == ["x.py"] and await serves(server, 1)


async def test_an_upper_case_id_is_the_lower_case_component(start, components) -> None:
    server = await start()
    status, body = await call(server, "POST", PREFIXES[0], {"id": "Hello", "source": hello(1)})
    assert status == 201 and body["id"] == "hello"
    assert [p.name for p in listed(components)] == ["hello.py"]
    assert (await call(server, "GET", PREFIXES[0] + "/HELLO"))[1]["id"] == "hello"


async def test_bad_bodies_are_400(start, components) -> None:
    server = await start()
    for body in ({"id": "x"}, {"id": "x", "source": ""}, {"id": "x", "source": 5}, [1], "text"):
        assert (await call(server, "POST", PREFIXES[0], body))[0] == 400, body
    response = await server.admin.post(
        PREFIXES[0], data=b"{not json", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status == 400 and "JSON" in (await response.json())["error"]
    # The main listener's content-type rule: a text body is not read as JSON.
    response = await server.admin.post(
        PREFIXES[0], data=b'{"id": "x"}', headers={**ADMIN, "Content-Type": "text/plain"}
    )
    assert (response.status, (await response.json())["accepted"]) == (415, "application/json")
    deep = b'{"id": "x", "source": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    response = await server.admin.post(PREFIXES[0], data=deep, headers={**ADMIN, "Content-Type": "application/json"})
    assert (response.status, (await response.json())["error"]) == (
        400,
        "request body: JSON nested deeper than the limit of 64 levels (WORKFLOW_MAX_JSON_DEPTH)",
    )
    assert listed(components) == []


async def test_a_source_over_the_limit_is_413(start, components) -> None:
    server = await start(max_source_bytes=400)
    big = hello(1) + "# " + "x" * 400 + "\n"
    for prefix in PREFIXES:
        status, answer = await call(server, "POST", prefix, {"id": "hello", "source": big})
        assert status == 413 and answer["limit"] == 400
    assert listed(components) == []
    assert (await call(server, "POST", PREFIXES[0], {"id": "hello", "source": hello(1)}))[0] == 201
    status, answer = await call(server, "PUT", PREFIXES[1] + "/hello", {"source": big})
    assert status == 413 and await serves(server, 1) and (components / "hello.py").read_text() == hello(1)


@pytest.mark.parametrize(
    ("source", "module", "line"),
    [
        ("from server import hookimpl\nimport os\n", "os", 2),
        ("from server import hookimpl\n\n\ndef f():\n    from subprocess import run\n", "subprocess", 5),
        ("from server import hookimpl\nimport json, os.path as p\n", "os.path", 2),
        ("from server import hookimpl\nX = __import__('os')\n", "__import__", 2),
    ],
)
async def test_the_import_policy_refuses_other_modules(start, components, source, module, line) -> None:
    server = await start(component_imports=frozenset({"server", "tests", "json"}))
    assert (await call(server, "POST", PREFIXES[0], {"id": "hello", "source": hello(1)}))[0] == 201
    for method, path, body in (
        ("POST", PREFIXES[0], {"id": "other", "source": source}),
        ("PUT", PREFIXES[1] + "/hello", {"source": source}),
    ):
        status, answer = await call(server, method, path, body)
        assert status == 422 and module in answer["error"] and answer["line"] == line, (method, answer)
    assert sorted(p.name for p in listed(components)) == ["hello.py"]
    assert await serves(server, 1) and (components / "hello.py").read_text() == hello(1)


def test_the_import_policy_comes_from_the_environment() -> None:
    assert from_environment({"WORKFLOW_COMPONENT_IMPORTS": " server, json ,,"}).component_imports == frozenset(
        {"server", "json"}
    )
    assert from_environment({}).component_imports is None


async def test_without_an_import_policy_any_import_is_accepted(start, components) -> None:
    server = await start()
    source = hello(1).replace("from server import hookimpl\n", "from server import hookimpl\nimport os\n")
    assert (await call(server, "POST", PREFIXES[0], {"id": "hello", "source": source}))[0] == 201


# --------------------------------------------------------------------------- list and detail


async def test_list_and_detail_fields(start, components) -> None:
    (components / "broken.py").write_text("from server import hookimpl\n\nx = 1 / 0\n")
    server = await start()
    HUB["gate"] = asyncio.Event()
    status, created = await call(server, "POST", PREFIXES[0], {"id": "hello", "source": hello(1, wait=True)})
    assert status == 201

    for prefix in PREFIXES:
        status, body = await call(server, "GET", prefix)
        assert status == 200
        listed = {c["id"]: c for c in body["components"]}
        assert list(listed) == ["broken", "hello"]
        broken = listed["broken"]
        assert broken["status"] == "error" and broken["last_error"]["line"] == 3
        assert "ZeroDivisionError" in broken["last_error"]["error"]
        ok = listed["hello"]
        assert ok["status"] == "serving" and ok["version"] == 1 and ok["step_types"] == ["step.hello"]
        assert ok["sha256"] == created["sha256"] and len(ok["sha256"]) == 64 and ok["last_error"] is None
        assert datetime.fromisoformat(ok["loaded_at"]).tzinfo is not None and ok["in_flight"] == 0
        assert "source" not in ok
        status, detail = await call(server, "GET", f"{prefix}/broken")
        assert status == 200 and detail["status"] == "error"
        assert detail["source"] == (components / "broken.py").read_text()
    assert (await server.store.get_component("hello")).sha256 == created["sha256"]

    # A request running on the component shows as in flight until it finishes.
    request = asyncio.create_task(server.client.get("/hello"))
    await until(lambda: detail_field(server, "hello", "in_flight", lambda n: n == 1))
    HUB["gate"].set()
    response = await request
    assert response.status == 200 and (await response.json())["version"] == 1
    await until(lambda: detail_field(server, "hello", "in_flight", lambda n: n == 0))

    # A component in error (a file that never loaded) can be deleted: its file goes.
    assert (await call(server, "DELETE", PREFIXES[1] + "/broken"))[0] == 204
    assert not (components / "broken.py").exists()
    assert (await call(server, "GET", PREFIXES[1] + "/broken"))[0] == 404
    assert [a for _, a in await audit_actions(server, "broken")] == ["component.delete"]
    # ... and one in error is fixed with PUT (POST would overwrite someone's file: 409).
    (components / "later.py").write_text("syntax error here\n")
    await until(lambda: "later" in server.client.app[RELOADER].failures)
    status, body = await call(server, "POST", PREFIXES[1], {"id": "later", "source": hello(3, step="step.later")})
    assert status == 409 and (components / "later.py").read_text() == "syntax error here\n"
    status, body = await call(server, "PUT", PREFIXES[0] + "/later", {"source": hello(3, step="step.later")})
    assert status == 200 and body["status"] == "serving" and body["last_error"] is None
    assert (components / "later.py").read_text() == hello(3, step="step.later")


async def detail_field(server: Server, cid: str, field: str, check: Callable[[Any], bool]) -> bool:
    status, body = await call(server, "GET", f"{PREFIXES[0]}/{cid}")
    return status == 200 and check(body[field])


# --------------------------------------------------------------------------- concurrent writes


async def test_concurrent_creates_of_one_id_make_one_component(start, components) -> None:
    server = await start()
    answers = await asyncio.gather(
        *(call(server, "POST", PREFIXES[i % 2], {"id": "hello", "source": hello(i)}) for i in range(4))
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201, 409, 409, 409], answers
    winner = next(body for status, body in answers if status == 201)
    assert winner["version"] == 1 and server.client.app[RELOADER].components["hello"].version == 1
    row = await server.store.get_component("hello")
    assert row.version == 1 and row.sha256 == winner["sha256"]
    assert [a for _, a in await audit_actions(server, "hello")] == ["component.create"]


async def test_concurrent_updates_leave_file_service_and_store_agreeing(start, components) -> None:
    server = await start()
    assert (await call(server, "POST", PREFIXES[0], {"id": "hello", "source": hello(0)}))[0] == 201
    answers = await asyncio.gather(
        *(call(server, "PUT", PREFIXES[i % 2] + "/hello", {"source": hello(i)}) for i in range(1, 7))
    )
    assert [status for status, _ in answers] == [200] * 6
    assert len({body["version"] for _, body in answers}) == 6 and leftovers(components) == []
    # The last write to go into service is the one on disk and in the store, and the service settles on it.
    on_disk = (components / "hello.py").read_text()
    row = await server.store.get_component("hello")
    assert row.source == on_disk and row.version == 7
    last = max(answers, key=lambda answer: answer[1]["version"])[1]
    assert last["sha256"] == row.sha256
    await until(lambda: server.client.app[RELOADER].components["hello"].sha256 == row.sha256)
    assert [a for _, a in await audit_actions(server, "hello")] == ["component.create"] + ["component.update"] * 6


async def test_the_watcher_never_puts_back_an_older_version(start, components, monkeypatch) -> None:
    server = await start()
    syncs = Syncs(server)
    assert (await call(server, "POST", PREFIXES[0], {"id": "hello", "source": hello(1)}))[0] == 201
    await syncs.wait(1)
    # The watcher's next read of the file is held while the API puts version 2 in service.
    read, gate, real_read = threading.Event(), threading.Event(), replicator_module.read_source

    def held(path: Any) -> Any:
        source = real_read(path)
        read.set()
        gate.wait(5)
        return source

    monkeypatch.setattr(replicator_module, "read_source", held)
    try:
        temp = components / ".hello.py.tmp"
        temp.write_text(hello(1))  # an editor saving the same content again
        os.replace(temp, components / "hello.py")
        await until(read.is_set)
        put = asyncio.create_task(call(server, "PUT", PREFIXES[0] + "/hello", {"source": hello(2)}))
        await asyncio.sleep(0.05)  # the PUT is under way, waiting for the change the watcher holds
    finally:
        gate.set()
    status, body = await put
    assert status == 200 and body["version"] == 2
    await syncs.wait(3)  # the held save, then the API's rename
    after = await server.metrics()
    assert (dynamic(after, "load"), dynamic(after, "reload")) == (1, 1)  # the held save of version 1 loaded nothing
    assert server.client.app[RELOADER].components["hello"].version == 2 and await serves(server, 2)


# --------------------------------------------------------------------------- executions


async def next_millisecond() -> None:
    """Until the clock has moved on to another millisecond, so the runs below are plainly ordered in time."""
    now = int(time.time() * 1000)
    await until(lambda: int(time.time() * 1000) > now)


async def run_pipelines(server: Server) -> datetime:
    """3 successful `ok` runs, then 2 failing `picky` runs, each in its own millisecond; returns a moment between."""
    for _ in range(3):
        await next_millisecond()
        response = await server.client.post("/ok", json={})
        assert response.status == 200
    middle = datetime.now(UTC)
    for _ in range(2):
        await next_millisecond()
        response = await server.client.post("/picky", json={})
        assert response.status == 400
    return middle


async def executions(server: Server, **params: str) -> tuple[int, Any]:
    return await call(server, "GET", "/api/executions", **params)


async def test_executions_are_listed_filtered_and_paginated(start) -> None:
    server = await start()
    middle = await run_pipelines(server)
    status, body = await until(lambda: recorded(server, 5))
    listed = body["executions"]
    assert [e["pipeline"] for e in listed] == ["picky", "picky", "ok", "ok", "ok"]  # newest first
    assert [e["status"] for e in listed] == ["error", "error", "success", "success", "success"]
    assert all(e["workflow_type"] == "http" and e["duration_ms"] >= 0 for e in listed)
    assert "missing required field" in listed[0]["error"]["error"] and listed[-1]["error"] is None
    assert body["next"] is None

    assert ids_of(await executions(server, pipeline="ok")) == [e["id"] for e in listed[2:]]
    assert ids_of(await executions(server, status="error")) == [e["id"] for e in listed[:2]]
    assert ids_of(await executions(server, status="error", pipeline="ok")) == []
    assert ids_of(await executions(server, pipeline="nope")) == []
    assert ids_of(await executions(server, since=middle.isoformat())) == [e["id"] for e in listed[:2]]
    assert ids_of(await executions(server, until=middle.isoformat())) == [e["id"] for e in listed[2:]]
    zulu = middle.replace(tzinfo=None).isoformat() + "Z"
    assert ids_of(await executions(server, since=zulu)) == [e["id"] for e in listed[:2]]
    naive = middle.replace(tzinfo=None).isoformat()  # taken as UTC
    assert ids_of(await executions(server, until=naive)) == [e["id"] for e in listed[2:]]
    # An offset typed into a URL unencoded: its `+` arrives as a space.
    plus = middle.astimezone(timezone(timedelta(hours=2))).isoformat()
    status, body = await call(server, "GET", "/api/executions?since=" + plus)
    assert status == 200 and [e["id"] for e in body["executions"]] == [e["id"] for e in listed[:2]], body
    assert ids_of(await executions(server, since=middle.isoformat(), pipeline="ok")) == []

    # Pagination: follow `next` until it is null; every execution once, in order.
    seen, path, pages = [], "/api/executions?limit=2", 0
    while path:
        status, page = await call(server, "GET", path)
        assert status == 200 and len(page["executions"]) <= 2
        seen += [e["id"] for e in page["executions"]]
        path, pages = page["next"], pages + 1
        assert pages <= 5
    assert pages == 3 and seen == [e["id"] for e in listed]
    # `next` keeps the filters.
    status, page = await executions(server, limit="2", pipeline="ok")
    assert "pipeline=ok" in page["next"]
    status, rest = await call(server, "GET", page["next"])
    assert [e["pipeline"] for e in rest["executions"]] == ["ok"] and rest["next"] is None


async def recorded(server: Server, count: int) -> tuple[int, Any] | None:
    status, body = await executions(server)
    return (status, body) if status == 200 and len(body["executions"]) >= count else None


def ids_of(answer: tuple[int, Any]) -> list[str]:
    status, body = answer
    assert status == 200, body
    return [e["id"] for e in body["executions"]]


async def test_execution_detail_has_per_step_timings(start) -> None:
    server = await start()
    await run_pipelines(server)
    _, body = await until(lambda: recorded(server, 5))
    failed, succeeded = body["executions"][0], body["executions"][-1]

    status, detail = await call(server, "GET", f"/api/executions/{succeeded['id']}")
    assert status == 200 and detail["id"] == succeeded["id"] and detail["status"] == "success"
    assert [(s["name"], s["type"], s["status"]) for s in detail["steps"]] == [
        ("mark", "step.set", "success"),
        ("respond", "step.json_response", "success"),
    ]
    assert all(isinstance(s["duration_ms"], float) and s["duration_ms"] >= 0 for s in detail["steps"])
    assert sum(s["duration_ms"] for s in detail["steps"]) <= detail["duration_ms"] + 0.01

    status, detail = await call(server, "GET", f"/api/executions/{failed['id']}")
    assert status == 200 and detail["status"] == "error" and detail["result"] is None
    assert [(s["name"], s["status"]) for s in detail["steps"]] == [("check", "error")]
    assert "missing required field" in detail["steps"][0]["error"]

    status, answer = await call(server, "GET", "/api/executions/no-such-execution")
    assert status == 404 and "no-such-execution" in answer["error"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "finished"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "two"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"before": "not-a-cursor"}, "before"),
        ({"before": "eHl6"}, "before"),
    ],
)
async def test_bad_execution_queries_are_400(start, params, field) -> None:
    server = await start()
    status, body = await executions(server, **params)
    assert status == 400 and body["field"] == field, body


# --------------------------------------------------------------------------- pipelines


async def test_pipelines_show_which_step_types_are_available(start, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="workflow")
    server = await start()
    assert any("unknown step type 'step.hello'" in r.getMessage() for r in caplog.records)

    status, body = await call(server, "GET", "/api/pipelines")
    assert status == 200
    pipelines = {p["name"]: p for p in body["pipelines"]}
    assert sorted(pipelines) == ["hello", "ok", "picky"]
    assert pipelines["hello"]["trigger"] == {"type": "http", "config": {"path": "/hello", "method": "GET"}}
    assert pipelines["hello"]["available"] is False
    assert pipelines["hello"]["steps"] == [
        {
            "name": "hello",
            "type": "step.hello",
            "available": False,
            "provider": None,
            "compensation": False,
            "next": ["end"],
        }
    ]
    assert pipelines["hello"]["recent"] == {"count": 0, "success_rate": None, "p95_ms": None}
    ok = pipelines["ok"]
    assert ok["available"] is True and ok["on_error"] == "compensate"
    assert [(s["name"], s["type"], s["available"], s["compensation"], s["next"]) for s in ok["steps"]] == [
        ("mark", "step.set", True, False, ["respond"]),
        ("respond", "step.json_response", True, False, ["end"]),
        ("undo", "step.log", True, True, []),
    ]

    syncs = Syncs(server)
    assert (await call(server, "POST", PREFIXES[1], {"id": "greeter", "source": hello(1)}))[0] == 201
    _, body = await call(server, "GET", "/api/pipelines")
    hello_pipeline = next(p for p in body["pipelines"] if p["name"] == "hello")
    assert hello_pipeline["available"] is True
    assert (
        hello_pipeline["steps"][0]["available"] is True
        and hello_pipeline["steps"][0]["provider"] == "component:greeter"
    )

    await syncs.wait(1)  # the watcher is done with the new file before it goes
    assert (await call(server, "DELETE", PREFIXES[1] + "/greeter"))[0] == 204
    _, body = await call(server, "GET", "/api/pipelines")
    assert next(p for p in body["pipelines"] if p["name"] == "hello")["available"] is False


# --------------------------------------------------------------------------- the store under the admin API


async def test_a_cancelled_write_never_breaks_later_writes(start) -> None:
    """Writes cancelled at any point (a shutdown, a timeout) leave no transaction open behind them."""
    server = await start()
    store = server.store

    async def writing() -> None:
        while True:
            await store.audit("ada", "component.update", "hello", None)

    moments = random.Random(0)  # cancelled at many points of a write: before, during and after each statement
    for attempt in range(60):
        task = asyncio.create_task(writing())
        await asyncio.sleep(moments.uniform(0, 0.002))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.audit("ada", "component.delete", f"check-{attempt}", None)  # raises if a transaction is open
    assert [(r.who, r.action) for r in await store.list_audit(target="check-59")] == [("ada", "component.delete")]


async def test_stopping_retention_is_not_held_up_by_an_error_raised_while_cancelling(caplog) -> None:
    pruning = asyncio.Event()

    class Store:
        async def prune_executions(self, older_than: datetime) -> int:
            pruning.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise RuntimeError("rollback failed") from None  # what a store may do on the way out
            return 0

    retention = Retention(Store(), 7, every=300)  # type: ignore[arg-type]
    retention.start()
    await pruning.wait()
    started = time.monotonic()
    async with asyncio.timeout(2):
        await retention.stop()
    assert time.monotonic() - started < 0.5  # not the 300 s until the next round
    assert [t for t in asyncio.all_tasks() if t.get_name() == "execution-retention"] == []
    # The error raised on the way out ended the task; it was not taken for a failed round and logged.
    assert retention.pruned == 0 and "pruning old executions failed" not in caplog.text


async def test_an_identical_put_keeps_the_version(start, components) -> None:
    server = await start()
    assert (await call(server, "POST", PREFIXES[0], {"id": "hello", "source": hello(1)}))[0] == 201
    audit = await server.store.list_audit(target="hello")
    for _ in range(2):
        status, body = await call(server, "PUT", PREFIXES[0] + "/hello", {"source": hello(1)})
        assert (status, body["version"], body["status"]) == (200, 1, "serving")
    row = await server.store.get_component("hello")
    assert (row.version, row.source) == (1, hello(1))
    assert await server.store.list_audit(target="hello") == audit  # nothing changed, so nothing to audit
    assert (components / "hello.py").read_text() == hello(1) and await serves(server, 1)
    status, body = await call(server, "PUT", PREFIXES[0] + "/hello", {"source": hello(2)})
    assert (status, body["version"]) == (200, 2)


async def test_a_refused_api_upload_is_the_components_last_error_not_a_degraded_server(start, components) -> None:
    server = await start()
    assert (await call(server, "POST", PREFIXES[0], {"id": "hello", "source": hello(1)}))[0] == 201
    status, body = await call(server, "PUT", PREFIXES[0] + "/hello", {"source": "def broken(:\n"})
    assert status == 422 and body["error"].endswith("hello.py:1: syntax error: invalid syntax")
    health = await (await server.client.get("/healthz")).json()
    assert health["status"] == "ok" and health["checks"]["components"]["failing_ids"] == []
    status, body = await call(server, "GET", PREFIXES[0] + "/hello")
    assert (status, body["status"], body["version"]) == (200, "serving", 1)
    assert body["last_error"]["error"].endswith("hello.py:1: syntax error: invalid syntax")
    # A broken file in the folder is different: what is there does not serve, and /healthz says which and why.
    (components / "hello.py").write_text("def broken(:\n")
    await until(
        lambda: (
            "hello" in server.client.app[RELOADER].failures
            and server.client.app[RELOADER].failures["hello"].origin == "file"
        )
    )
    health = await (await server.client.get("/healthz")).json()
    assert health["status"] == "degraded" and health["checks"]["components"]["failing_ids"] == ["hello"]
    assert health["checks"]["components"]["errors"]["hello"].endswith("hello.py:1: syntax error: invalid syntax")
