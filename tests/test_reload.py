"""Hot reload: real component files and config files in tmp_path, the real watcher, a real server on loopback."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import textwrap
import threading
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.app import reload_config_file as reload_config
from server.http import handlers as http_module
from server.keys import RELOADER, REPLICATOR
from server.reload.loader import MODULE_PREFIX
from server.reload.manager import ComponentManager
from tests.conftest import ROOT, Server, free_port, metric_value, run_cli, server_command, until
from tests.hub import HUB

# Shared by a test and the component versions it writes (`from tests.hub import HUB`):
# gates a step awaits, and the order in which steps and lifecycle hooks ran. Reset for each test.
HELLO = """\
pipelines:
  hello:
    trigger: {type: http, config: {path: /hello, method: GET}}
    steps:
      - {name: hello, type: step.hello}
"""


@pytest.fixture(autouse=True)
def hub() -> None:
    HUB.clear()
    HUB["events"] = []


@pytest.fixture
def start(make_server) -> Callable[..., Awaitable[Server]]:
    """make_server with the tiny debounce these tests rely on."""

    async def start(config: str = HELLO, **overrides: Any) -> Server:
        overrides.setdefault("debounce", 0.01)
        return await make_server(config, **overrides)

    return start


def component(version: int = 1, *, step: str = "step.hello", before: str = "", extra: str = "") -> str:
    """A component whose step answers its VERSION and whose hooks record themselves in HUB["events"].

    `before` is step-body code run first (may await); `extra` is appended at module level.
    """
    body = "".join(f"    {line}\n" for line in textwrap.dedent(before).strip().splitlines())
    return (
        "from server import hookimpl\n"
        "from tests.hub import HUB\n"
        f"VERSION = {version}\n\n\n"
        "async def hello(ctx):\n"
        f"{body}"
        "    HUB['events'].append(f'run {VERSION}')\n"
        "    return {'version': VERSION}\n\n\n"
        "@hookimpl\n"
        "def register_steps(register):\n"
        f"    register({step!r}, hello)\n\n\n"
        "@hookimpl\n"
        "async def startup(services, logger):\n"
        "    HUB['events'].append(f'startup {VERSION}')\n"
        "    HUB['logger'] = logger.name\n\n\n"
        "@hookimpl\n"
        "def shutdown(logger):\n"
        "    HUB['events'].append(f'shutdown {VERSION}')\n" + textwrap.dedent(extra)
    )


def save(path: Path, text: str) -> None:
    """Save like an editor that writes atomically: a hidden temp file renamed over the target."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def manager(server: Server) -> ComponentManager:
    return server.client.app[RELOADER]


async def get(server: Server, path: str = "/hello") -> tuple[int, Any]:
    response = await server.client.get(path)
    return response.status, await response.json()


async def serves(server: Server, version: int, path: str = "/hello") -> bool:
    status, body = await get(server, path)
    return status == 200 and body.get("version") == version


async def answers(server: Server, status: int, path: str = "/hello") -> bool:
    return (await get(server, path))[0] == status


async def health(server: Server) -> tuple[int, dict]:
    response = await server.client.get("/healthz")
    return response.status, await response.json()


def in_service(server: Server, version: int, component_id: str = "hello") -> bool:
    """Whether the manager has swapped in that version (without a request, which v1 might block)."""
    loaded = manager(server).components.get(component_id)
    return loaded is not None and loaded.version == version


def dynamic(text: str, operation: str, status: str = "success") -> float:
    return metric_value(text, "module_operations_total", module="dynamic", operation=operation, status=status)


def loaded_component_modules() -> list[str]:
    return [name for name in sys.modules if name.startswith(MODULE_PREFIX)]


# --------------------------------------------------------------------------- add, edit, delete


async def test_add_edit_delete_and_re_add_without_restart(start, components, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="workflow")
    server = await start()
    # At start-up a missing type is a warning; the server comes up and the pipeline answers 503 naming it.
    assert any(
        "unknown step type 'step.hello'" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    assert await get(server, "/readyz") == (200, {"status": "ready"})
    status, body = await get(server)
    assert status == 503 and "'step.hello'" in body["error"]

    path = components / "hello.py"
    path.write_text(component(1))
    await until(lambda: serves(server, 1))
    first = manager(server).components["hello"].module
    path.write_text(component(2))
    await until(lambda: serves(server, 2))
    second = manager(server).components["hello"]
    assert second.version == 2 and second.module is not first  # a fresh module, never importlib.reload
    assert HUB["logger"] == "workflow.component.hello"

    path.unlink()
    await until(lambda: answers(server, 503))
    status, body = await get(server)
    assert body["type"] == "step.hello" and "'step.hello'" in body["error"]
    assert "hello" not in manager(server).components and "step.hello" not in server.engine.registry.steps
    await until(lambda: "shutdown 2" in HUB["events"])  # deleting stops the version in service

    path.write_text(component(3))
    await until(lambda: serves(server, 3))
    # Its version goes on from the store's history: added, saved, deleted, added again.
    await until(lambda: manager(server).components["hello"].version == 4)
    assert loaded_component_modules() == []


async def test_atomic_saves_are_handled_like_plain_writes(start, components) -> None:
    path = components / "hello.py"
    path.write_text(component(1))
    server = await start()
    assert await serves(server, 1)
    save(path, component(2))  # hidden temp file, renamed over
    await until(lambda: serves(server, 2))
    temp = components / "hello.py.new"  # a visible temp name that is not a component either
    temp.write_text(component(3))
    os.replace(temp, path)
    await until(lambda: serves(server, 3))
    assert manager(server).failures == {}
    assert sorted(manager(server).components) == ["hello"]


async def test_a_save_that_changes_nothing_reloads_nothing(start, components) -> None:
    server = await start()
    path = components / "hello.py"
    path.write_text(component(1))
    await until(lambda: serves(server, 1))
    loaded = manager(server).components["hello"]
    path.write_text(component(1))  # same bytes, new mtime and events
    # The watcher applies changes in order: once a later file is in service, the no-op save was handled.
    (components / "zzz.py").write_text(component(1, step="step.zzz"))
    await until(lambda: "zzz" in manager(server).components)
    assert manager(server).components["hello"] is loaded
    text = await server.metrics()
    assert dynamic(text, "file_change") >= 3
    assert dynamic(text, "reload") == 0 and dynamic(text, "load") == 2
    assert HUB["events"].count("startup 1") == 2  # hello and zzz, not hello twice


async def test_editor_temp_hidden_private_and_pycache_files_are_ignored(start, components) -> None:
    ignored = {
        ".hidden.py": component(91, step="step.hidden"),
        "_private.py": component(92, step="step.private"),
        "hello.py~": component(93),
        "hello.py.swp": component(94),
        ".hello.py.swx": component(95),
        "#hello.py#": component(96),
        "hello.py.tmp": component(97),
        "4913": component(98),
    }
    (components / "__pycache__").mkdir()
    for name, text in {**ignored, "__pycache__/cached.py": component(99, step="step.cached")}.items():
        (components / name).write_text(text)
    server = await start()
    assert manager(server).components == {} and manager(server).failures == {}  # at start-up

    for name, text in ignored.items():  # and when they change later
        (components / name).write_text(text + "# edited\n")
    (components / "__pycache__" / "cached.py").write_text(component(99, step="step.cached") + "# edited\n")
    (components / "hello.py").write_text(component(1))
    (components / "zzz.py").write_text(component(1, step="step.zzz"))  # sorts after every name above
    await until(lambda: "zzz" in manager(server).components)
    assert await serves(server, 1)
    assert sorted(manager(server).components) == ["hello", "zzz"]
    assert manager(server).failures == {}
    assert not {"step.hidden", "step.private", "step.cached"} & set(server.engine.registry.steps)


async def test_polling_mode_sees_adds_quick_edits_deletes_and_config_saves(start, components) -> None:
    server = await start(HELLO + CONFIG_V2.removeprefix("pipelines:\n"), polling=True)
    path = components / "hello.py"
    path.write_text(component(1))
    await until(lambda: serves(server, 1))
    path.write_text(component(2))  # within the same second as the last change
    await until(lambda: serves(server, 2))
    save(path, component(3))
    await until(lambda: serves(server, 3))
    path.unlink()
    await until(lambda: answers(server, 503))
    server.engine.settings.config_path.write_text(HELLO + CONFIG_V1.removeprefix("pipelines:\n"))
    await until(lambda: answers(server, 200, "/a"))
    assert (await get(server, "/b"))[0] == 404


async def test_a_directory_named_like_a_component_is_not_one(start, components) -> None:
    server = await start()
    (components / "folder.py").mkdir()
    (components / "zzz.py").write_text(component(1, step="step.zzz"))
    await until(lambda: "zzz" in manager(server).components)
    assert manager(server).failures == {} and sorted(manager(server).components) == ["zzz"]


async def test_a_save_during_start_up_is_not_lost(start, components) -> None:
    # zzz.py blocks its import (off the loop) until released, so start-up is still loading when hello changes.
    HUB["importing"], HUB["release"] = threading.Event(), threading.Event()
    (components / "hello.py").write_text(component(1))
    # The body also runs in the candidate process first, where HUB is that process's own (empty) copy.
    (components / "zzz.py").write_text(
        component(
            1,
            step="step.zzz",
            extra="""
        if 'importing' in HUB:
            HUB['importing'].set()
            HUB['release'].wait(5)
    """,
        )
    )
    starting = asyncio.create_task(start())
    try:
        await until(HUB["importing"].is_set)
        save(components / "hello.py", component(2))
    finally:
        HUB["release"].set()
    server = await starting
    await until(lambda: serves(server, 2))
    assert manager(server).failures == {}
    assert {name: c.version for name, c in manager(server).components.items()} == {"hello": 2, "zzz": 1}
    assert (await server.store.get_component("hello")).source == component(2)


# --------------------------------------------------------------------------- refusals


HOOKS_TAIL = """

async def hello(ctx):
    return {"version": "bad"}


@hookimpl
def register_steps(register):
    register("step.hello", hello)
"""

REFUSALS = {
    "syntax error": ("from server import hookimpl\n\ndef broken(:\n    pass\n", 3, "syntax error"),
    "import error": (
        "from server import hookimpl\nimport workflow_no_such_module_xyz\n",
        2,
        "failed to import: ModuleNotFoundError: No module named 'workflow_no_such_module_xyz'",
    ),
    "error inside a function at import": (
        "from server import hookimpl\n\n\ndef settings():\n    return {}['missing']\n\n\nSETTINGS = settings()\n",
        5,
        "failed to import: KeyError: 'missing'",
    ),
    "exit at import": ("from server import hookimpl\nraise SystemExit(3)\n", 2, "failed to import: SystemExit: 3"),
    "hook signature": (
        "from server import hookimpl\n\n\nasync def hello(ctx):\n    return {}\n\n\n"
        "@hookimpl\ndef register_steps(register, extra):\n    register('step.hello', hello)\n",
        8,
        "for hook 'register_steps'",
    ),
    "unknown hook name": (
        "from server import hookimpl" + HOOKS_TAIL + "\n\n@hookimpl\ndef register_step(register):\n    pass\n",
        12,
        "unknown hook 'register_step'",
    ),
    "no hooks": ("VALUE = 1\n", None, "defines no hook implementations"),
    "clash with a built-in": (
        "from server import hookimpl" + HOOKS_TAIL + "    register('step.set', hello)\n",
        10,
        "step type 'step.set': already registered by plugins.core",
    ),
    "bad contract": (
        "from server import hookimpl" + HOOKS_TAIL.replace("hello)", "hello, inputs={'name': 'strnig'})"),
        9,
        "type 'strnig' is not one of",
    ),
    "registration raises": (
        "from server import hookimpl\n\n\n@hookimpl\ndef register_steps(register):\n    raise ValueError('nope')\n",
        6,
        "registration failed: ValueError: nope",
    ),
    "prepare refuses the config": (
        "from server import hookimpl\n\n\ndef prepare(config):\n    raise ValueError('bad config')\n"
        + HOOKS_TAIL.replace("hello)", "hello, prepare=prepare)"),
        None,
        "the config does not compile with this version: ",
    ),
    "prepare crashes": (
        "from server import hookimpl\n\n\ndef prepare(config):\n    raise RuntimeError('prepare crashed')\n"
        + HOOKS_TAIL.replace("hello)", "hello, prepare=prepare)"),
        5,
        "the config does not compile with this version: RuntimeError: prepare crashed",
    ),
    "startup fails": (
        "from server import hookimpl"
        + HOOKS_TAIL
        + "\n\n@hookimpl\nasync def startup(services, logger):\n    raise RuntimeError('no database')\n",
        14,
        "startup hook of component:hello failed: RuntimeError: no database",
    ),
    "startup times out": (
        "import asyncio\nfrom server import hookimpl"
        + HOOKS_TAIL
        + "\n\n@hookimpl\nasync def startup(services, logger):\n    await asyncio.sleep(30)\n",
        None,
        "startup hook of component:hello did not finish within 0.2s",
    ),
}


@pytest.mark.parametrize(("text", "line", "needle"), list(REFUSALS.values()), ids=list(REFUSALS))
async def test_a_refused_version_never_replaces_the_one_in_service(
    start, components, caplog, text, line, needle
) -> None:
    caplog.set_level(logging.INFO, logger="workflow")
    path = components / "hello.py"
    good = component(1)
    path.write_text(good)
    server = await start(lifecycle_timeout=0.2)
    assert await serves(server, 1)
    assert (await health(server))[1]["status"] == "ok"

    save(path, text)
    failure = await until(lambda: manager(server).failures.get("hello"))
    where = f"{path}:{line}: " if line else f"{path}: "
    assert failure.error.startswith(where) and needle in failure.error, failure.error
    assert failure.line == line
    assert await serves(server, 1)  # the old version keeps serving
    assert "shutdown 1" not in HUB["events"]
    status, body = await health(server)
    assert (status, body["status"]) == (200, "degraded")
    checks = body["checks"]["components"]
    assert (checks["status"], checks["failing"], checks["failing_ids"], checks["in_service"]) == (
        "degraded",
        1,
        ["hello"],
        1,
    )
    text_metrics = await server.metrics()
    assert dynamic(text_metrics, "reload", "error") == 1 and dynamic(text_metrics, "reload") == 0
    refused = [r for r in caplog.records if r.name == "workflow.reloader" and r.levelno == logging.ERROR]
    assert len(refused) == 1 and failure.error in refused[0].getMessage() and " ms" in refused[0].getMessage()
    assert refused[0].result == "error" and refused[0].sha256

    save(path, good)  # putting the serving version back clears the error without a reload
    await until(lambda: "hello" not in manager(server).failures)
    assert (await health(server))[1]["status"] == "ok"
    assert manager(server).components["hello"].version == 1 and await serves(server, 1)


async def test_a_type_owned_by_another_component_is_refused_naming_both(start, components) -> None:
    config = (
        HELLO
        + """\
  dup:
    trigger: {type: http, config: {path: /dup, method: GET}}
    steps:
      - {name: dup, type: step.dup}
"""
    )
    (components / "a.py").write_text(component(1, step="step.dup"))
    server = await start(config)
    assert await serves(server, 1, "/dup")
    b = components / "b.py"
    save(
        b,
        "from server import hookimpl\n\n\nasync def dup(ctx):\n    return {'version': 'b'}\n\n\n"
        "@hookimpl\ndef register_steps(register):\n    register('step.dup', dup)\n",
    )
    failure = await until(lambda: manager(server).failures.get("b"))
    assert failure.error == f"{b}:10: step type 'step.dup': already registered by component:a"
    assert await serves(server, 1, "/dup")
    assert server.engine.registry.steps["step.dup"].provider == "component:a"
    # Once the owner leaves, the refused file gets its turn without being saved again.
    (components / "a.py").unlink()
    await until(
        lambda: (
            server.engine.registry.steps.get("step.dup") is not None
            and server.engine.registry.steps["step.dup"].provider == "component:b"
        )
    )
    assert "b" not in manager(server).failures
    response = await server.client.get("/dup")
    assert (await response.json())["version"] == "b"


# --------------------------------------------------------------------------- swap, drain, garbage


async def test_in_flight_request_finishes_on_its_version_while_the_next_serves(start, components) -> None:
    HUB["entered"], HUB["gate"] = asyncio.Event(), asyncio.Event()
    path = components / "hello.py"
    path.write_text(
        component(
            1,
            before="""
        HUB['entered'].set()
        await HUB['gate'].wait()
    """,
        )
    )
    server = await start()
    slow = asyncio.create_task(server.client.get("/hello"))
    await asyncio.wait_for(HUB["entered"].wait(), 5)

    save(path, component(2))
    await until(lambda: in_service(server, 2))
    assert await serves(server, 2)  # new requests get v2 while v1 is still running
    assert not slow.done()
    assert "shutdown 1" not in HUB["events"]  # v1 stops only once its execution has drained

    HUB["gate"].set()
    response = await slow
    assert response.status == 200 and (await response.json())["version"] == 1
    await until(lambda: "shutdown 1" in HUB["events"])
    assert HUB["events"].index("run 1") < HUB["events"].index("shutdown 1")
    assert HUB["events"][:2] == ["startup 1", "startup 2"]


async def test_drain_wait_is_bounded_by_the_drain_timeout(start, components, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="workflow")
    HUB["entered"], HUB["gate"] = asyncio.Event(), asyncio.Event()
    path = components / "hello.py"
    path.write_text(
        component(
            1,
            before="""
        HUB['entered'].set()
        await HUB['gate'].wait()
    """,
        )
    )
    server = await start(drain_timeout=0.2)
    slow = asyncio.create_task(server.client.get("/hello"))
    await asyncio.wait_for(HUB["entered"].wait(), 5)
    save(path, component(2))
    await until(lambda: "shutdown 1" in HUB["events"])  # although the request still runs
    assert not slow.done()
    assert any("while executions still use it" in r.getMessage() for r in caplog.records)
    HUB["gate"].set()
    assert (await (await slow).json())["version"] == 1


async def test_old_versions_become_garbage(start, components) -> None:
    path = components / "hello.py"
    server = await start()
    modules, classes = [], []
    for version in range(1, 51):
        path.write_text(component(version, extra="\n\nclass Marker:\n    pass\n"))
        await until(lambda v=version: in_service(server, v))
        loaded = manager(server).components["hello"]
        modules.append(weakref.ref(loaded.module))
        classes.append(weakref.ref(loaded.module.Marker))
        del loaded
        if version % 10 == 0:
            assert await serves(server, version)
    await until(lambda: sum(e.startswith("shutdown") for e in HUB["events"]) == 49)
    await until(lambda: not manager(server)._retiring)
    gc.collect()
    alive = [version for version, ref in enumerate(modules, 1) if ref() is not None]
    assert alive == [50]
    assert [version for version, ref in enumerate(classes, 1) if ref() is not None] == [50]
    assert loaded_component_modules() == []


# --------------------------------------------------------------------------- start-up


async def test_broken_components_at_start_up_do_not_stop_the_server(start, components, caplog) -> None:
    caplog.set_level(logging.INFO, logger="workflow")
    config = (
        HELLO
        + """\
  explode:
    trigger: {type: http, config: {path: /explode, method: GET}}
    steps:
      - {name: explode, type: step.explode}
"""
    )
    (components / "broken.py").write_text("from server import hookimpl\n\ndef broken(:\n")
    (components / "exits.py").write_text("raise SystemExit(3)\n")
    (components / "explode.py").write_text(
        "from server import hookimpl\n\n\ndef prepare(config):\n    raise RuntimeError('boom')\n\n\n"
        "async def explode(ctx):\n    return {}\n\n\n"
        "@hookimpl\ndef register_steps(register):\n    register('step.explode', explode, prepare=prepare)\n"
    )
    (components / "hello.py").write_text(component(1))
    server = await start(config)
    assert await serves(server, 1)
    status, body = await get(server, "/explode")
    assert status == 503 and body["type"] == "step.explode"
    status, body = await health(server)
    assert status == 200 and body["status"] == "degraded"
    assert body["checks"]["components"]["failing_ids"] == ["broken", "exits", "explode"]
    assert body["checks"]["components"]["in_service"] == 1
    assert any("loaded 1 component(s)" in r.getMessage() and "(3 refused)" in r.getMessage() for r in caplog.records)


async def test_a_component_using_dataclasses_with_postponed_annotations_loads(start, components) -> None:
    (components / "hello.py").write_text(
        textwrap.dedent("""\
        from __future__ import annotations

        from dataclasses import dataclass, field
        from typing import ClassVar

        from server import hookimpl


        @dataclass
        class Options:
            version: int = 7
            tags: list[str] = field(default_factory=list)
            kind: ClassVar[str] = "options"


        async def hello(ctx):
            return {"version": Options().version}


        @hookimpl
        def register_steps(register):
            register("step.hello", hello)
    """)
    )
    server = await start()
    assert manager(server).failures == {}
    assert await serves(server, 7)
    assert loaded_component_modules() == []


# --------------------------------------------------------------------------- visibility


async def test_each_change_is_counted_and_logged_once(start, components, caplog) -> None:
    caplog.set_level(logging.INFO, logger="workflow")
    server = await start()
    path = components / "hello.py"
    save(path, component(1))
    await until(lambda: serves(server, 1))

    async def gauge() -> float:
        return metric_value(await server.metrics(), "dynamic_components")

    # Set once the change is recorded in the store, a moment after the new version serves.
    await until(lambda: gauge())
    assert await gauge() == 1
    save(path, component(2))
    await until(lambda: serves(server, 2))
    save(path, "from server import hookimpl\ndef broken(:\n")
    await until(lambda: "hello" in manager(server).failures)
    path.unlink()
    await until(lambda: answers(server, 503))

    text = await server.metrics()
    assert dynamic(text, "file_change") >= 4
    assert (dynamic(text, "load"), dynamic(text, "reload"), dynamic(text, "reload", "error")) == (1, 1, 1)
    assert (dynamic(text, "register"), dynamic(text, "unregister")) == (2, 1)
    assert metric_value(text, "dynamic_components") == 0
    assert metric_value(text, "dynamic_component_reload_seconds_count") == 2
    assert (
        metric_value(text, "module_operations_total", module="step.hello", operation="execute", status="success") >= 2
    )

    lines = [r for r in caplog.records if r.name == "workflow.reloader"]
    assert [(r.levelname, r.getMessage().split()[0], getattr(r, "result", None)) for r in lines] == [
        ("INFO", "load", "success"),
        ("INFO", "reload", "success"),
        ("ERROR", "reload", "error"),
        ("INFO", "unregister", "success"),
    ]
    load, reload, refused, _ = lines
    for record in (load, reload):
        assert str(path) in record.getMessage() and record.sha256 in record.getMessage()
        assert " ms" in record.getMessage() and record.duration_ms >= 0
    assert f"{path}:2: syntax error" in refused.getMessage() and len(refused.sha256) == 12


# --------------------------------------------------------------------------- config


CONFIG_V1 = """\
pipelines:
  a:
    trigger: {type: http, config: {path: /a, method: GET}}
    steps:
      - {name: s, type: step.set, config: {values: {v: a1}}}
  c:
    trigger: {type: http, config: {path: /c, method: GET}}
    steps:
      - {name: s, type: step.set, config: {values: {v: c1}}}
"""
CONFIG_V2 = CONFIG_V1.replace("a:", "b:").replace("/a", "/b").replace("a1", "b2").replace("c1", "c2")
CONFIG_BAD = """\
pipelines:
  a:
    trigger: {type: http, config: {path: /a, method: GET}}
    on_error: sometimes
    steps:
      - {name: s, type: step.set, config: {values: {v: "{{ .x "}}}
  b:
    trigger: {type: http, config: {path: /metrics, method: GET}}
    steps:
      - {name: s, type: step.set, config: {values: {v: b}}}
"""
CONFIG_BAD_LINES = (4, 6, 8)


async def value(server: Server, path: str) -> tuple[int, Any]:
    status, body = await get(server, path)
    return status, body.get("v")


async def test_a_changed_config_swaps_in_routes_appear_change_and_disappear(start) -> None:
    server = await start(CONFIG_V1)
    assert await value(server, "/a") == (200, "a1")
    save(server.engine.settings.config_path, CONFIG_V2)
    await until(lambda: answers(server, 200, "/b"))
    assert await value(server, "/b") == (200, "b2")
    assert await value(server, "/c") == (200, "c2")
    assert (await get(server, "/a"))[0] == 404
    text = await server.metrics()
    assert metric_value(text, "module_operations_total", module="config", operation="reload", status="success") == 1
    assert metric_value(text, "module_operations_total", module="config", operation="reload", status="error") == 0


async def test_an_invalid_config_keeps_the_running_one_and_logs_every_error(start, caplog) -> None:
    caplog.set_level(logging.INFO, logger="workflow")
    server = await start(CONFIG_V1)
    config_path = server.engine.settings.config_path
    config_path.write_text(CONFIG_BAD)  # a plain write this time
    await until(lambda: any(r.getMessage().startswith("config reload refused") for r in caplog.records))
    errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("config reload refused")]
    for line in CONFIG_BAD_LINES:
        assert any(f"config reload refused: {config_path}:{line}: " in m for m in errors), (line, errors)
    assert await value(server, "/a") == (200, "a1") and await value(server, "/c") == (200, "c1")
    text = await server.metrics()
    assert metric_value(text, "module_operations_total", module="config", operation="reload", status="error") >= 1
    assert metric_value(text, "module_operations_total", module="config", operation="reload", status="success") == 0


async def test_reload_config_is_what_a_hangup_calls(start) -> None:
    server = await start(CONFIG_V1, watch=False)
    config_path = server.engine.settings.config_path
    config_path.write_text(CONFIG_BAD)
    assert await reload_config(server.client.app) is False
    assert await value(server, "/a") == (200, "a1")
    config_path.write_text(CONFIG_V2)
    assert await reload_config(server.client.app) is True
    assert await value(server, "/b") == (200, "b2") and (await get(server, "/a"))[0] == 404


async def test_a_config_reload_survives_a_component_reload_around_it(start, components) -> None:
    # The component's startup hook holds its swap open while the config is reloaded; neither undoes the other.
    HUB["entered"], HUB["gate"] = asyncio.Event(), asyncio.Event()
    config = CONFIG_V1 + HELLO.removeprefix("pipelines:\n")
    (components / "hello.py").write_text(component(1))
    server = await start(config, watch=False)
    path = components / "hello.py"
    path.write_text(
        component(
            2,
            extra="""
        @hookimpl
        async def startup(services, logger):
            HUB['entered'].set()
            await HUB['gate'].wait()
    """,
        )
    )
    swapping = asyncio.create_task(server.client.app[REPLICATOR].file_changed(path))
    await asyncio.wait_for(HUB["entered"].wait(), 5)
    server.engine.settings.config_path.write_text(CONFIG_V2 + HELLO.removeprefix("pipelines:\n"))
    reloading = asyncio.create_task(reload_config(server.client.app))
    await asyncio.sleep(0.05)  # give the config reload the chance to run ahead (it must not)
    HUB["gate"].set()
    await swapping
    assert await reloading is True
    assert await serves(server, 2) and await value(server, "/b") == (200, "b2")


# --------------------------------------------------------------------------- command line and process


def test_validate_loads_the_components_folder(tmp_path: Path, components: Path) -> None:
    (components / "greet_x.py").write_text(
        "from server import hookimpl\n\n\nasync def greet(ctx):\n    return {}\n\n\n"
        "@hookimpl\ndef register_steps(register):\n    register('step.greet_x', greet)\n"
    )
    config = tmp_path / "greet.yaml"
    config.write_text(
        "pipelines:\n  greet:\n    trigger: {type: manual}\n    steps:\n      - {name: greet, type: step.greet_x}\n"
    )
    env = {"WORKFLOW_COMPONENTS_DIR": str(components)}
    result = run_cli("validate", str(config), env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{config}: ok (1 pipelines)\n", "")

    broken = components / "broken.py"
    broken.write_text("from server import hookimpl\ndef broken(:\n")
    clash = components / "clash.py"
    clash.write_text(
        "from server import hookimpl\n\n\n@hookimpl\ndef register_steps(register):\n"
        "    register('step.set', lambda ctx: None)\n"
    )
    config.write_text(config.read_text() + "      - {name: other, type: step.unknown_x}\n")
    result = run_cli("validate", str(config), env=env)
    assert result.returncode == 1 and result.stdout == ""
    problems = result.stderr.splitlines()
    assert any(p.startswith(f"{broken}:2: syntax error") for p in problems), problems
    assert f"{clash}:6: step type 'step.set': already registered by plugins.core" in problems
    assert f"{config}:6: pipeline 'greet', step 'other': unknown step type 'step.unknown_x'" in problems
    assert len(problems) == 3


async def test_sighup_reloads_the_config_of_the_real_process(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_V1)
    port, admin = free_port(), free_port()
    # No file watching: only the signal can make the new config take effect.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")},
        "WORKFLOW_WATCH": "false",
        "WORKFLOW_LOG_FORMAT": "json",
        "WORKFLOW_DATA_DIR": str(tmp_path / "data"),
        "WORKFLOW_COMPONENTS_DIR": str(tmp_path / "components"),
    }
    proc = await asyncio.create_subprocess_exec(
        *server_command(config, f"127.0.0.1:{port}", f"127.0.0.1:{admin}"),
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def status(path: str) -> int | None:
                try:
                    async with session.get(base + path) as response:
                        return response.status
                except aiohttp.ClientConnectionError:
                    return None

            async def reloads(result: str) -> float:
                async with session.get(base + "/metrics") as response:
                    return metric_value(
                        await response.text(),
                        "module_operations_total",
                        module="config",
                        operation="reload",
                        status=result,
                    )

            async def ready() -> bool:
                return proc.returncode is not None or await status("/readyz") == 200

            await until(ready, timeout=15)
            assert proc.returncode is None
            assert (await status("/a"), await status("/b")) == (200, 404)
            config.write_text(CONFIG_V2)
            proc.send_signal(signal.SIGHUP)
            await until(lambda: reloads("success"))
            assert (await status("/a"), await status("/b")) == (404, 200)
            config.write_text(CONFIG_BAD)
            proc.send_signal(signal.SIGHUP)
            await until(lambda: reloads("error"))
            assert await status("/b") == 200
            assert (await reloads("success"), await reloads("error")) == (1, 1)  # one reload per hangup
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert f"config reload refused: {config}:4: " in err.decode()


# --------------------------------------------------------------------------- draining shared by several versions


async def test_every_retired_version_stops_once_the_shared_execution_drains(start, components) -> None:
    HUB["entered"], HUB["gate"] = asyncio.Event(), asyncio.Event()
    path = components / "hello.py"
    path.write_text(
        component(
            1,
            before="""
        HUB['entered'].set()
        await HUB['gate'].wait()
    """,
        )
    )
    server = await start(drain_timeout=1.0)
    slow = asyncio.create_task(server.client.get("/hello"))
    await asyncio.wait_for(HUB["entered"].wait(), 5)
    save(path, component(2))
    await until(lambda: in_service(server, 2))
    save(path, component(3))  # v1 and v2 now both wait for the request running on v1's state
    await until(lambda: in_service(server, 3))
    assert await serves(server, 3)
    HUB["gate"].set()
    await slow
    await until(lambda: {"shutdown 1", "shutdown 2"} <= set(HUB["events"]), timeout=0.5)


async def test_a_request_still_sending_its_body_does_not_run_on_a_stopped_version(
    start, components, monkeypatch
) -> None:
    reading, body_done = asyncio.Event(), asyncio.Event()
    original = http_module.read_payload

    async def read_payload(request):
        reading.set()
        return await original(request)

    monkeypatch.setattr(http_module, "read_payload", read_payload)
    config = HELLO.replace("method: GET", "method: POST")
    path = components / "hello.py"
    path.write_text(component(1))
    server = await start(config)

    async def body():
        yield b'{"a": '
        await body_done.wait()
        yield b"1}"

    request = asyncio.create_task(
        server.client.post("/hello", data=body(), headers={"Content-Type": "application/json"})
    )
    await asyncio.wait_for(reading.wait(), 5)
    save(path, component(2))
    await until(lambda: in_service(server, 2))
    assert "shutdown 1" not in HUB["events"]  # v1 is leased by the request still sending its body
    body_done.set()
    response = await request
    assert (response.status, (await response.json())["version"]) == (200, 1)
    await until(lambda: "shutdown 1" in HUB["events"])
    events = HUB["events"]
    assert events.index("run 1") < events.index("shutdown 1")
    assert "run 1" not in events[events.index("shutdown 1") :]


SLOW_TO_STOP = """\
import asyncio
from server import hookimpl
from tests.hub import HUB


async def step(ctx):
    return {}


@hookimpl
def register_steps(register):
    register("step.slow", step)


@hookimpl
async def shutdown(logger):
    HUB['events'].append('slow stopping')
    await asyncio.sleep(1.0)
"""


async def test_no_component_loads_while_the_components_shut_down(start, components) -> None:
    (components / "slow.py").write_text(SLOW_TO_STOP)
    server = await start()
    await until(lambda: "slow" in manager(server).components)
    pid = manager(server).isolation.helper.pid
    assert pid is not None  # the isolation helper checked slow.py
    closing = asyncio.create_task(server.client.close())
    await until(lambda: "slow stopping" in HUB["events"])
    (components / "late.py").write_text(component(1, step="step.late"))  # saved while the server stops
    await asyncio.sleep(0.3)
    await closing
    # The watcher stopped before the components did: late.py never started (so it has no shutdown to miss).
    assert HUB["events"] == ["slow stopping"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # and the isolation helper stopped with them
