"""Step contracts and isolation for components: declared inputs and outputs, timeouts, the thread pool."""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from typing import Any

import pytest

from server.keys import RELOADER
from tests.conftest import metric_value
from tests.hub import HUB

# Shared with the component files below (`from tests.hub import HUB`); reset for each test.
GREETER = """\
from server import hookimpl
from tests.hub import HUB


async def greet(ctx):
    HUB["calls"] += 1
    if ctx.config.get("omit"):
        return {}
    if ctx.config.get("wrong_type"):
        return {"greeting": 5, "times": 1}
    return {"greeting": f"{ctx.inputs['salutation']} {ctx.inputs['name']}", "times": ctx.inputs["times"]}


@hookimpl
def register_steps(register):
    register("step.greet_c", greet,
             inputs={"name": "string",
                     "salutation": {"type": "string", "default": "hello"},
                     "times": {"type": "integer", "default": 1}},
             outputs={"greeting": "string", "times": "integer"})
"""

CONTRACT_CONFIG = """\
pipelines:
  greet:
    trigger: {type: http, config: {path: /greet}}
    steps:
      - {name: greet, type: step.greet_c}
  greet-config:
    trigger: {type: http, config: {path: /greet-config}}
    steps:
      - {name: greet, type: step.greet_c, config: {name: "{{ .who }}", times: 3}}
  omit:
    trigger: {type: http, config: {path: /omit}}
    steps:
      - {name: liar, type: step.greet_c, config: {omit: true}}
  wrong-type:
    trigger: {type: http, config: {path: /wrong-type}}
    steps:
      - {name: liar, type: step.greet_c, config: {wrong_type: true}}
"""


@pytest.fixture(autouse=True)
def hub():
    HUB.clear()
    HUB["calls"] = 0
    HUB["release"] = threading.Event()
    yield
    HUB["release"].set()  # never leave a worker thread blocked after a test


async def post(server, path: str, body: dict | None = None) -> tuple[int, Any]:
    response = await server.client.post(path, json=body or {})
    return response.status, await response.json()


async def test_inputs_are_checked_before_the_step_runs_and_defaults_applied(make_server, components) -> None:
    (components / "greeter.py").write_text(GREETER)
    server = await make_server(CONTRACT_CONFIG)
    assert server.client.app[RELOADER].failures == {}

    status, body = await post(server, "/greet")
    assert status == 400 and body["field"] == "name" and body["step"] == "greet"
    assert "'name' is required" in body["error"]
    status, body = await post(server, "/greet", {"name": 5})
    assert (status, body["field"]) == (400, "name")
    assert body["error"] == "step 'greet': input 'name' must be of type string, not a number"  # JSON's words
    status, body = await post(server, "/greet", {"name": "ada", "times": "2"})
    assert (status, body["error"]) == (400, "step 'greet': input 'times' must be of type integer, not a string")
    assert HUB["calls"] == 0  # refused before the step ran

    status, body = await post(server, "/greet", {"name": "ada"})
    assert (status, body["greeting"], body["times"]) == (200, "hello ada", 1)
    status, body = await post(server, "/greet", {"name": "ada", "salutation": "hi", "times": None})
    assert (status, body["greeting"], body["times"]) == (200, "hi ada", 1)
    status, body = await post(server, "/greet-config", {"who": "bob", "name": "ignored"})
    assert (status, body["greeting"], body["times"]) == (200, "hello bob", 3)  # config before data


async def test_outputs_are_checked_after_the_step_runs(make_server, components) -> None:
    (components / "greeter.py").write_text(GREETER)
    server = await make_server(CONTRACT_CONFIG)
    status, body = await post(server, "/omit", {"name": "ada"})
    assert status == 500 and body["field"] == "greeting" and "did not output 'greeting'" in body["error"]
    status, body = await post(server, "/wrong-type", {"name": "ada"})
    assert status == 500 and body["field"] == "greeting" and "is not string" in body["error"]
    assert HUB["calls"] == 2
    text = await server.metrics()
    assert (
        metric_value(text, "module_operations_total", module="step.greet_c", operation="execute", status="error") == 2
    )


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("{'n': {'type': 'integer', 'default': 'three'}}", "inputs.n: default 'three' is not integer"),
        ("{'n': 'strnig'}", "inputs.n: type 'strnig' is not one of"),
        ("{'n': {'kind': 'string'}}", "inputs.n: use a type name or"),
        ("['n']", "inputs: must be a mapping"),
    ],
)
async def test_a_bad_contract_refuses_the_component(make_server, components, spec, needle) -> None:
    path = components / "bad.py"
    path.write_text(
        "from server import hookimpl\n\n\nasync def step(ctx):\n    return {}\n\n\n"
        f"@hookimpl\ndef register_steps(register):\n    register('step.bad', step, inputs={spec})\n"
    )
    server = await make_server(CONTRACT_CONFIG)
    failure = server.client.app[RELOADER].failures["bad"]
    assert failure.error.startswith(f"{path}:10: step type 'step.bad': ") and needle in failure.error, failure.error
    assert "step.bad" not in server.engine.registry.steps


# --------------------------------------------------------------------------- isolation

SLOW = """\
import asyncio
import threading

from server import hookimpl
from tests.hub import HUB


async def slow(ctx):
    await asyncio.sleep(ctx.config["sleep"])
    return {"slept": True}


def blocking(ctx):
    with HUB["lock"]:
        HUB["running"] += 1
        HUB["peak"] = max(HUB["peak"], HUB["running"])
    try:
        HUB["release"].wait(5)
    finally:
        with HUB["lock"]:
            HUB["running"] -= 1
    return {"thread": threading.current_thread().name}


@hookimpl
def register_steps(register):
    register("step.slow_reg", slow, timeout=2)
    register("step.slow_plain", slow)
    register("step.blocking", blocking)
"""


def pipeline(name: str, step_type: str, config: str = "{}", timeout: str = "") -> str:
    extra = f", timeout: {timeout}" if timeout else ""
    return textwrap.indent(
        textwrap.dedent(f"""\
        {name}:
          trigger: {{type: http, config: {{path: /{name}, method: GET}}}}
          steps:
            - {{name: s, type: {step_type}, config: {config}{extra}}}
    """),
        "  ",
    )


SLEEP = "{sleep: 0.2}"
ISOLATION_CONFIG = "pipelines:\n" + "".join(
    [
        pipeline("register-beats-settings", "step.slow_reg", SLEEP),
        pipeline("step-beats-register", "step.slow_reg", SLEEP, "50ms"),
        pipeline("settings-apply", "step.slow_plain", SLEEP),
        pipeline("step-beats-settings", "step.slow_plain", SLEEP, "2s"),
        pipeline("blocking", "step.blocking", timeout="5s"),
        pipeline("blocking-timeout", "step.blocking", timeout="50ms"),
    ]
)


@pytest.fixture
async def isolated(make_server, components):
    HUB.update(lock=threading.Lock(), running=0, peak=0)
    (components / "slow.py").write_text(SLOW)
    server = await make_server(ISOLATION_CONFIG, step_timeout=0.05, step_threads=2)
    assert server.client.app[RELOADER].failures == {}
    return server


async def test_step_timeout_precedence_step_then_register_then_settings(isolated) -> None:
    statuses = {}
    for name in ("register-beats-settings", "step-beats-register", "settings-apply", "step-beats-settings"):
        response = await isolated.client.get(f"/{name}")
        statuses[name] = response.status
        if response.status == 504:
            assert "timed out after 0.05s" in (await response.json())["error"]
    assert statuses == {
        "register-beats-settings": 200,
        "step-beats-register": 504,
        "settings-apply": 504,
        "step-beats-settings": 200,
    }
    text = await isolated.metrics()
    for step_type in ("step.slow_reg", "step.slow_plain"):
        for status in ("success", "timeout"):
            assert (
                metric_value(text, "module_operations_total", module=step_type, operation="execute", status=status) == 1
            ), (step_type, status)


async def test_plain_def_steps_run_in_the_bounded_pool_without_blocking_the_loop(isolated) -> None:
    requests = [asyncio.create_task(isolated.client.get("/blocking")) for _ in range(3)]
    deadline = time.monotonic() + 5
    while HUB["running"] < 2:
        assert time.monotonic() < deadline, "the blocking steps did not start"
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    live = await isolated.client.get("/livez")  # the loop answers while two threads block
    assert (live.status, await live.json()) == (200, {"status": "ok"})
    assert time.perf_counter() - started < 2  # the blocked threads hold for up to 5 s
    await asyncio.sleep(0.05)  # room for a third thread, if the pool were not bounded
    assert (HUB["running"], HUB["peak"]) == (2, 2)
    assert not any(r.done() for r in requests)
    HUB["release"].set()
    responses = await asyncio.gather(*requests)
    assert [r.status for r in responses] == [200, 200, 200]
    threads = {(await r.json())["thread"] for r in responses}
    assert all(name.startswith("workflow-step") for name in threads) and len(threads) <= 2
    assert HUB["peak"] == 2


async def test_a_plain_def_step_that_hangs_times_out_with_504(isolated) -> None:
    response = await isolated.client.get("/blocking-timeout")
    assert response.status == 504 and (await response.json())["step"] == "s"
    text = await isolated.metrics()
    assert (
        metric_value(text, "module_operations_total", module="step.blocking", operation="execute", status="timeout")
        == 1
    )
