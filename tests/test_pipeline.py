"""The pipeline executor end to end: data flow, routing, error policies, statuses, threads, metrics, async runs."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime

import pytest

from server.config.model import END, Step, plan_flow
from server.config.templates import compile_value
from server.engine.state import State
from server.hooks.registry import RegistryBuilder
from tests.conftest import equals, metric_value, until
from tests.pipeline_plugin import CALLS


def ran() -> list[str]:
    """Names of the `test.record` steps that ran, in order."""
    return [call["step"] for call in CALLS]


def http(name: str, path: str, body: str, extra: str = "") -> str:
    """One pipeline with an HTTP POST trigger; `body` is its indented `steps:` block."""
    return f"""
  {name}:
    trigger: {{type: http, config: {{path: "{path}", method: POST}}}}{extra}
    steps:
{body}"""


# --------------------------------------------------------------------------- data flow

FLOW = "pipelines:" + http(
    "flow",
    "/flow/{id}",
    """
      - {name: first, type: test.record, config: {output: {a: 1, x: first}}}
      - name: second
        type: step.set
        config: {values: {a_from_data: "{{ .a }}", a_from_steps: "{{ .steps.first.a }}", x: second}}
      - {name: third, type: test.record, config: {output: {x: third}}}
      - name: report
        type: step.set
        config:
          values:
            x_now: "{{ .x }}"
            x_of_second: "{{ .steps.second.x }}"
            x_trigger: "{{ .trigger.x }}"
            pipeline: "{{ .meta.pipeline }}"
            execution_id: "{{ .meta.execution_id }}"
            started_at: "{{ .meta.started_at }}"
            id: "{{ .params.id }}"
            q: "{{ .query.q }}"
""",
)


async def test_steps_run_in_order_and_each_output_is_merged_and_addressable(serve):
    srv = await serve(FLOW)
    before = datetime.now(UTC)
    response = await srv.client.post("/flow/42?q=hi", json={"x": "payload"})
    assert response.status == 200, await response.text()
    data = await response.json()
    assert ran() == ["first", "third"]
    # `third` saw what `first` and `second` produced, and the untouched trigger payload.
    assert CALLS[1]["data"]["a_from_data"] == 1 and CALLS[1]["data"]["x"] == "second"
    assert CALLS[1]["trigger"]["x"] == "payload"
    assert data["a_from_steps"] == 1 and data["a_from_data"] == 1  # a whole-value template keeps the int
    assert (data["x"], data["x_now"], data["x_of_second"], data["x_trigger"]) == ("third", "third", "second", "payload")
    assert (data["id"], data["q"], data["params"], data["query"]) == ("42", "hi", {"id": "42"}, {"q": "hi"})
    assert data["pipeline"] == "flow"
    assert data["execution_id"] == response.headers["X-Execution-ID"] == CALLS[0]["execution_id"]
    execution = uuid.UUID(data["execution_id"])
    assert execution.version == 7  # time-ordered: its first 48 bits are the start in Unix milliseconds
    started = datetime.fromisoformat(data["started_at"])
    assert abs((execution.int >> 80) - started.timestamp() * 1000) < 5
    assert abs((started - before).total_seconds()) < 5


# --------------------------------------------------------------------------- step.conditional

ROUTER = (
    "pipelines:"
    + http(
        "route",
        "/route",
        """
      - {name: start, type: test.record}
      - name: pick
        type: step.conditional
        config: {field: kind, routes: {a: on_a, b: on_b, c: on_c}, default: fallback}
      - {name: on_a, type: test.record}
      - {name: on_b, type: test.record, next: finish}
      - {name: on_c, type: test.record}
      - {name: fallback, type: test.record}
      - {name: after, type: test.record}
      - {name: finish, type: test.record}
""",
    )
    + http(
        "tail",
        "/tail",
        """
      - name: pick
        type: step.conditional
        config: {field: kind, routes: {a: last_a, b: last_b}}
      - {name: last_a, type: test.record}
      - {name: last_b, type: test.record}
""",
    )
)


@pytest.mark.parametrize(
    ("path", "kind", "expected"),
    [
        ("/route", "a", ["start", "on_a", "after", "finish"]),  # join: first step after ALL targets
        ("/route", "b", ["start", "on_b", "finish"]),  # a target's own `next:` wins
        ("/route", "c", ["start", "on_c", "after", "finish"]),  # never falls into `fallback`
        ("/route", "zzz", ["start", "fallback", "after", "finish"]),  # default route
        ("/route", None, ["start", "fallback", "after", "finish"]),  # missing field: default
        ("/tail", "a", ["last_a"]),  # join past the end: the pipeline ends
        ("/tail", "b", ["last_b"]),
    ],
)
async def test_conditional_jumps_and_joins_after_all_its_targets(serve, path, kind, expected):
    srv = await serve(ROUTER)
    response = await srv.client.post(path, json={} if kind is None else {"kind": kind})
    assert response.status == 200, await response.text()
    assert ran() == expected
    assert (await response.json())["route"] == (kind or "")


async def test_conditional_without_match_or_default_is_an_error(serve):
    srv = await serve(ROUTER)
    response = await srv.client.post("/tail", json={"kind": "zzz"})
    assert response.status == 500
    body = await response.json()
    assert body["step"] == "pick" and "zzz" in body["error"] and body["execution_id"]
    assert ran() == []


@pytest.mark.parametrize(
    ("field", "routes", "payload", "expected"),
    [
        ("order.status", "{paid: hit, open: miss}", {"order": {"status": "paid"}}, "hit"),  # dot path
        ('"{{ lower .kind }}"', "{big: hit, small: miss}", {"kind": "BIG"}, "hit"),  # template
        ("order.ok", "{true: hit, false: miss}", {"order": {"ok": True}}, "hit"),  # YAML bool keys
        ("order.ok", "{true: hit, false: miss}", {"order": {"ok": False}}, "miss"),
        ('"{{ .ok }}"', '{"true": hit, "false": miss}', {"ok": False}, "miss"),  # quoted keys
        ("code", "{200: hit, 404: miss}", {"code": 404}, "miss"),  # YAML int keys
        ("items.1", "{x: miss, y: hit}", {"items": ["x", "y"]}, "hit"),  # list index
    ],
)
async def test_conditional_routes_on_dot_paths_templates_and_booleans(serve, field, routes, payload, expected):
    srv = await serve(
        "pipelines:"
        + http(
            "r",
            "/r",
            f"""
      - {{name: pick, type: step.conditional, config: {{field: {field}, routes: {routes}}}}}
      - {{name: hit, type: test.record}}
      - {{name: miss, type: test.record}}
""",
        )
    )
    response = await srv.client.post("/r", json=payload)
    assert response.status == 200, await response.text()
    assert ran() == [expected]


# --------------------------------------------------------------------------- next:

NEXT = (
    "pipelines:"
    + http(
        "hop",
        "/hop",
        """
      - {name: a, type: test.record, next: c}
      - {name: b, type: test.record}
      - {name: c, type: test.record}
""",
    )
    + http(
        "loop",
        "/loop",
        """
      - {name: a, type: step.set, config: {values: {n: 1}}, next: b}
      - {name: b, type: step.set, config: {values: {n: 2}}, next: a}
""",
        "\n    timeout: 60s",
    )
)


async def test_next_on_a_plain_step_skips_ahead(serve):
    srv = await serve(NEXT)
    response = await srv.client.post("/hop")
    assert (response.status, await response.json()) == (200, {"params": {}, "query": {}})
    assert ran() == ["a", "c"]


async def test_an_endless_next_loop_ends_with_an_error_not_a_hang(serve):
    srv = await serve(NEXT)
    start = time.monotonic()
    response = await asyncio.wait_for(srv.client.post("/loop"), 10)
    assert response.status == 500
    assert "loop" in (await response.json())["error"]
    assert time.monotonic() - start < 5  # the 60s pipeline timeout did not end it


# --------------------------------------------------------------------------- on_error


def policy_config(policy: str) -> str:
    return "pipelines:" + http(
        "p",
        "/p",
        """
      - {name: one, type: test.record, config: {output: {one: true}}}
      - {name: bad, type: test.fail}
      - {name: two, type: test.record, config: {output: {two: true}}}
    compensation:
      - {name: undo_one, type: test.record}
      - {name: undo_broken, type: test.boom}
      - {name: undo_last, type: test.record}
""",
        f"\n    on_error: {policy}",
    )


@pytest.mark.parametrize(
    ("policy", "status", "expected"),
    [
        ("stop", 500, ["one"]),
        ("skip", 200, ["one", "two"]),
        # reverse order; the failing compensation step neither stops the others nor hides the error
        ("compensate", 500, ["one", "undo_last", "undo_one"]),
    ],
)
async def test_on_error_policies(serve, policy, status, expected):
    srv = await serve(policy_config(policy))
    response = await srv.client.post("/p")
    body = await response.json()
    assert response.status == status
    assert ran() == expected
    if status == 200:
        assert body["one"] is True and body["two"] is True
    else:
        assert body["step"] == "bad" and body["error"] == "failed on purpose"
    outcome = "success" if status == 200 else "error"
    assert (
        metric_value(await srv.metrics(), "workflow_executions_total", workflow_type="http", action="p", status=outcome)
        == 1
    )


SKIPPED_ROUTER = "pipelines:" + http(
    "s",
    "/s",
    """
      - {name: pick, type: step.conditional, config: {field: kind, routes: {a: on_a, b: on_b}}}
      - {name: on_a, type: test.record}
      - {name: on_b, type: test.record}
      - {name: after, type: test.record}
""",
    "\n    on_error: skip",
)


@pytest.mark.parametrize(
    ("kind", "expected", "route"), [("a", ["on_a", "after"], {"route": "a"}), ("zzz", ["after"], {})]
)
async def test_a_skipped_conditional_goes_to_its_join_not_into_a_branch(serve, kind, expected, route):
    srv = await serve(SKIPPED_ROUTER)
    response = await srv.client.post("/s", json={"kind": kind})
    assert (response.status, await response.json()) == (200, {"kind": kind, "params": {}, "query": {}, **route})
    assert ran() == expected


# --------------------------------------------------------------------------- failure statuses

FAILURES = (
    "pipelines:"
    + http(
        "invalid",
        "/invalid",
        """
      - {name: check, type: step.validate, config: {required_fields: [name]}}
""",
    )
    + http(
        "crash",
        "/crash",
        """
      - {name: explode, type: test.boom}
""",
    )
    + http(
        "slow",
        "/slow",
        """
      - {name: nap, type: test.sleep, config: {seconds: 5}}
""",
        "\n    timeout: 200ms",
    )
    + http(
        "slower",
        "/slower",
        """
      - {name: nap, type: test.sleep, config: {seconds: 5}}
""",
        "\n    timeout: 1s",
    )
    + http(
        "slow-step",
        "/slow-step",
        """
      - {name: nap, type: test.sleep, timeout: 100ms, config: {seconds: 5}}
      - {name: never, type: test.record}
""",
    )
    + http(
        "gone",
        "/gone",
        """
      - {name: vanished, type: step.gone}
""",
    )
)


@pytest.mark.parametrize(
    ("path", "action", "status", "step", "outcome"),
    [
        ("/invalid", "invalid", 400, "check", "error"),
        ("/crash", "crash", 500, "explode", "error"),
        ("/slow", "slow", 504, None, "timeout"),
        ("/slower", "slower", 504, None, "timeout"),  # a deadline on a shared timer (server/deadlines.py)
        ("/slow-step", "slow-step", 504, "nap", "timeout"),
        ("/gone", "gone", 503, "vanished", "error"),
    ],
)
async def test_each_failure_has_its_status_and_a_json_body(serve, path, action, status, step, outcome):
    srv = await serve(FAILURES, strict=False)
    start = time.monotonic()
    sent = asyncio.ensure_future(srv.client.post(path, json={}))
    if path == "/slower":  # a deadline this far off waits on a shared timer (server/deadlines.py)
        await until(lambda: len(srv.engine.executor.deadlines) == 1)
    response = await sent
    text = await response.text()
    assert response.status == status, text
    assert time.monotonic() - start < 3
    body = await response.json()
    assert isinstance(body["error"], str) and body["execution_id"] == response.headers["X-Execution-ID"]
    if step is not None:
        assert body["step"] == step
    assert "Traceback" not in text and "secret-internal-detail" not in text
    assert ran() == []
    metrics = await srv.metrics()
    assert metric_value(metrics, "workflow_executions_total", workflow_type="http", action=action, status=outcome) == 1
    assert metric_value(metrics, "workflow_duration_seconds_count", workflow_type="http", action=action) == 1
    assert metric_value(metrics, "active_workflows", workflow_type="http") == 0
    if path == "/gone":
        assert "step.gone" in body["error"]
    if path == "/slower":  # never early, and late by one slice of the shared timers at most
        assert 1.0 <= time.monotonic() - start < 1.5
        assert len(srv.engine.executor.deadlines) == 0
    if path.startswith("/slow"):  # cut by its own or the pipeline's deadline, the step timed out
        assert (
            metric_value(metrics, "module_operations_total", module="test.sleep", operation="execute", status="timeout")
            == 1
        )
        assert 'status="cancelled"' not in metrics


async def test_a_step_exception_is_logged_server_side_with_its_step(serve, caplog):
    srv = await serve(FAILURES, strict=False)
    with caplog.at_level(logging.ERROR, logger="workflow.step"):
        response = await srv.client.post("/crash")
    assert (response.status, await response.json()) == (
        500,
        {
            "error": "step 'explode' (test.boom) failed: RuntimeError",
            "step": "explode",
            "execution_id": response.headers["X-Execution-ID"],
        },
    )
    [record] = [r for r in caplog.records if r.name == "workflow.step" and r.exc_info]
    assert (record.pipeline, record.step) == ("crash", "explode")
    assert "secret-internal-detail" in str(record.exc_info[1])


async def test_a_step_type_removed_at_runtime_answers_503_naming_it(serve):
    srv = await serve("pipelines:" + http("rec", "/rec", "      - {name: r, type: test.record}\n"))
    response = await srv.client.post("/rec")
    assert (response.status, await response.json()) == (200, {"params": {}, "query": {}})
    original = srv.engine.registry
    builder = RegistryBuilder(base=original)
    del builder.steps["test.record"]
    srv.engine.swap(State(builder.build(), srv.engine.config))
    response = await srv.client.post("/rec")
    assert (response.status, await response.json()) == (
        503,
        {
            "error": "step type 'test.record' is not available",
            "step": "r",
            "type": "test.record",
            "execution_id": response.headers["X-Execution-ID"],
        },
    )
    srv.engine.swap(State(original, srv.engine.config))
    response = await srv.client.post("/rec")
    assert (response.status, await response.json()) == (200, {"params": {}, "query": {}})


# --------------------------------------------------------------------------- threads, cancellation, metrics

SYNC = (
    "pipelines:"
    + http(
        "sync",
        "/sync",
        """
      - {name: napper, type: test.sync_sleep, config: {seconds: 0.5}}
""",
    )
    + http(
        "sleepy",
        "/sleepy",
        """
      - {name: nap, type: test.sleep, config: {seconds: 10}}
""",
        "\n    timeout: 60s",
    )
)


async def test_plain_def_steps_run_in_a_worker_thread_with_the_execution_context(serve):
    srv = await serve(SYNC)
    response = await srv.client.post("/sync")
    data = await response.json()
    assert data["napper_main_thread"] is False
    assert data["napper_execution_id"] == response.headers["X-Execution-ID"]


async def test_plain_def_steps_do_not_block_the_event_loop(serve):
    srv = await serve(SYNC)
    await srv.client.get("/healthz")  # warm up

    async def timed(coro):
        start = time.monotonic()
        await coro
        return time.monotonic() - start

    async def health_while_busy():
        await asyncio.sleep(0.15)
        return await timed(srv.client.get("/livez"))

    start = time.monotonic()
    responses = await asyncio.gather(srv.client.post("/sync"), srv.client.post("/sync"), health_while_busy())
    elapsed = time.monotonic() - start
    assert [(r.status, (await r.json())["napper_main_thread"]) for r in responses[:2]] == [(200, False)] * 2
    assert elapsed < 0.85, f"two 0.5s sync steps took {elapsed:.2f}s: they ran one after the other"
    assert responses[2] < 0.2, "the event loop was blocked by a sync step"


async def test_a_client_that_disconnects_mid_pipeline_leaves_no_active_workflow(serve):
    srv = await serve(SYNC)
    request = asyncio.create_task(srv.client.post("/sleepy"))

    async def active() -> float:
        return metric_value(await srv.metrics(), "active_workflows", workflow_type="http")

    await until(lambda: equals(active(), 1))
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    await until(lambda: equals(active(), 0))
    metrics = await srv.metrics()
    assert (
        metric_value(metrics, "workflow_executions_total", workflow_type="http", action="sleepy", status="error") == 1
    )
    assert (
        metric_value(metrics, "workflow_executions_total", workflow_type="http", action="sleepy", status="success") == 0
    )


async def test_successes_are_counted_and_timed_per_pipeline(serve):
    srv = await serve(FLOW + http("other", "/other", "      - {name: s, type: step.set, config: {values: {a: 1}}}\n"))
    for _ in range(2):
        assert (await srv.client.post("/flow/1", json={})).status == 200
    assert (await srv.client.post("/other")).status == 200
    metrics = await srv.metrics()
    for action, count in (("flow", 2), ("other", 1)):
        assert (
            metric_value(metrics, "workflow_executions_total", workflow_type="http", action=action, status="success")
            == count
        )
    assert metric_value(metrics, "workflow_duration_seconds_count", workflow_type="http", action="flow") == 2
    assert metric_value(metrics, "workflow_duration_seconds_sum", workflow_type="http", action="flow") > 0
    assert (
        metric_value(metrics, "module_operations_total", module="step.set", operation="execute", status="success") == 5
    )
    assert metric_value(metrics, "active_workflows", workflow_type="http") == 0


# --------------------------------------------------------------------------- async triggers

ASYNC = """
pipelines:
  job:
    trigger: {type: http, config: {path: /jobs, method: POST, async: true}}
    steps:
      - {name: nap, type: test.sleep, config: {seconds: 0.3}}
      - {name: done, type: step.set, config: {values: {done: "{{ .job }}"}}}
  job-fail:
    trigger: {type: http, config: {path: /jobs-fail, method: POST, async: true}}
    steps:
      - {name: bad, type: test.fail}
"""


async def test_async_trigger_answers_202_then_the_execution_result(serve):
    srv = await serve(ASYNC)
    response = await srv.client.post("/jobs", json={"job": 7})
    assert response.status == 202
    body = await response.json()
    execution_id = body["execution_id"]
    assert uuid.UUID(execution_id).version == 7  # time-ordered (CONTRACT §4)
    assert response.headers["Location"] == f"/executions/{execution_id}"
    early = await (await srv.client.get(response.headers["Location"])).json()
    assert early["status"] in ("queued", "running") and "result" not in early

    async def record():
        return await (await srv.client.get(f"/executions/{execution_id}")).json()

    await until(lambda: _status_is(record(), "running"))  # the step sleeps 0.3s
    await until(lambda: _status_is(record(), "success"))
    final = await record()
    assert final["status"] == "success" and final["id"] == execution_id
    assert final["result"]["done"] == 7 and final["result"]["slept"] == "nap"


async def test_async_failure_is_reported_by_the_execution(serve):
    # A failing job is retried (tests/test_queue.py); with one attempt it goes dead at once, with its error.
    srv = await serve(ASYNC, queue_max_attempts=1)
    location = (await srv.client.post("/jobs-fail")).headers["Location"]

    async def record():
        return await (await srv.client.get(location)).json()

    await until(lambda: _status_is(record(), "dead"))
    assert (await record())["error"]["step"] == "bad"


async def _status_is(record, status: str) -> bool:
    return (await record)["status"] == status


async def test_unknown_execution_is_404(serve):
    srv = await serve(ASYNC)
    response = await srv.client.get(f"/executions/{uuid.uuid4()}")
    assert response.status == 404
    assert "error" in await response.json()


# --------------------------------------------------------------------------- unit: the planned flow


def _step(name: str, *, next: str | None = None, targets: tuple[str, ...] = ()) -> Step:
    return Step(name, "t.x", {}, compile_value({}), next, targets=targets)


@pytest.mark.parametrize(
    ("steps", "flow"),
    [
        # plain fall-through, last step ends
        ([_step("a"), _step("b")], [1, END]),
        # router r -> x | y; x and y join at z; y's `next` wins; r itself (when skipped) goes to the join
        ([_step("r", targets=("x", "y")), _step("x"), _step("y", next="x"), _step("z")], [3, 3, 1, END]),
        # targets at the end join past it: the pipeline ends
        ([_step("r", targets=("x", "y")), _step("x"), _step("y")], [END, END, END]),
        # nested routers: an inner join landing on an outer sibling target climbs to the outer join
        (
            [
                _step("c1", targets=("c2", "w")),
                _step("c2", targets=("p", "q")),
                _step("p"),
                _step("q"),
                _step("w"),
                _step("end"),
            ],
            [5, 5, 5, 5, 5, END],
        ),
    ],
)
def test_plan_flow_joins_targets_after_the_last_one(steps, flow):
    assert list(plan_flow(tuple(steps))) == flow
