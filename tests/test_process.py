"""The real `workflow-server` process: start on free ports, serve, drain on SIGTERM, exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import ROOT, metric_value, start_server_process


async def test_serves_the_order_example_and_exits_cleanly_on_sigterm(tmp_path):
    proc, port, admin = await start_server_process(ROOT / "example" / "order-processing-pipeline.yaml", tmp_path)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/api/orders", json={"customer_id": "C-1", "total": 10}
        ) as response:
            assert response.status == 201
            assert (await response.json())["status"] == "pending"
        async with session.get(f"http://127.0.0.1:{admin}/metrics") as response:
            assert 'path="/api/orders"' in await response.text()
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert b"stopping: draining" in err


async def test_sigterm_lets_the_in_flight_request_finish(tmp_path, aiohttp_server):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({"slow": "done"})

    upstream = web.Application()
    upstream.router.add_get("/slow", slow)
    backend = await aiohttp_server(upstream)
    config = tmp_path / "slow.yaml"
    config.write_text(
        textwrap.dedent(f"""
        pipelines:
          slow:
            trigger: {{type: http, config: {{path: /slow, method: GET}}}}
            steps:
              - name: call
                type: step.http_call
                config: {{url: "http://127.0.0.1:{backend.port}/slow"}}
              - name: respond
                type: step.json_response
                config: {{body: "{{{{ .body }}}}"}}
    """)
    )
    proc, port, _ = await start_server_process(config, tmp_path)
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/slow"))
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        response = await request
        assert response.status == 200
        assert await response.json() == {"slow": "done"}
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err.decode()
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/readyz")


async def test_missing_config_variable_stops_start_up_naming_it(tmp_path):
    config = tmp_path / "env.yaml"
    config.write_text(
        "pipelines:\n  p:\n    trigger: {type: manual}\n    steps:\n"
        "      - {name: s, type: step.set, config: {values: {k: '${WF_TEST_UNSET_VAR}'}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WF_TEST_UNSET_VAR"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "--config",
        str(config),
        "--addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 1
    assert f"{config}:5: environment variable WF_TEST_UNSET_VAR is not set" in err.decode()


BLOCKING = """\
import time

from server import hookimpl


async def nap(ctx):
    time.sleep(1.5)
    return {"napped": True}


def spin(ctx):
    while True: pass  # one line, so the frame's line number is this one whichever instruction runs


async def hang(ctx):
    time.sleep(10**6)


@hookimpl
def register_steps(register):
    register("step.nap", nap)
    register("step.spin", spin)
    register("step.hang", hang)
"""
NAP_LINE, SPIN_LINE, HANG_LINE = 7, 12, 16
SLOW_STARTUP = """\
import time

from server import hookimpl


@hookimpl
def startup(logger):
    time.sleep(2)
"""


def _blocking_config(tmp_path: Path) -> tuple[Path, Path]:
    """A config with one pipeline per blocking step, and the component providing them."""
    (tmp_path / "components").mkdir()
    component = tmp_path / "components" / "blocking.py"
    component.write_text(BLOCKING)
    config = tmp_path / "blocking.yaml"
    config.write_text(
        "pipelines:\n"
        + "".join(
            f"  {name}:\n    trigger: {{type: http, config: {{path: /{name}, method: GET}}}}\n"
            f"    steps:\n      - {{name: {name}, type: step.{name}}}\n"
            for name in ("nap", "spin", "hang")
        )
    )
    return config, component


def _log_lines(err: bytes, logger: str) -> list[dict]:
    """The JSON log lines of one logger."""
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == logger]


async def test_a_blocking_async_step_shows_in_healthz_the_metric_and_one_warning(tmp_path):
    config, component = _blocking_config(tmp_path)
    proc, port, _ = await start_server_process(config, tmp_path)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/nap") as response:
            assert response.status == 200
            assert (await response.json())["napped"] is True
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            body = await response.json()
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            metrics = await response.text()
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    loop = body["checks"]["loop"]
    # The 100 ms timer was due at most 0.1 s after the sleep began, so it ran at least 1.4 s late.
    assert loop["status"] == "degraded"
    assert body["status"] == "degraded"
    assert 1.4 <= loop["max_lag_seconds"] < 10
    assert loop["threshold_seconds"] == 0.5
    assert loop["window_seconds"] == 60
    assert loop["blocked_at"] == f"{component}:{NAP_LINE} in nap"
    assert "event_loop_lag_max_seconds " in metrics
    assert 1.4 <= metric_value(metrics, "event_loop_lag_max_seconds") < 10
    assert metric_value(metrics, "event_loop_lag_seconds_bucket", le="2.5") >= 1
    assert 1.4 <= metric_value(metrics, "event_loop_lag_seconds_sum") < 10
    warnings = [line for line in _log_lines(err, "workflow.loop") if line["level"] == "warning"]
    assert len(warnings) == 1, warnings  # once per stall, however long it lasts
    assert warnings[0]["blocked_at"] == f"{component}:{NAP_LINE} in nap"
    assert warnings[0]["stack"][-1] == f"{component}:{NAP_LINE} in nap"
    assert warnings[0]["message"].startswith("event loop blocked for ")


async def test_sigterm_ends_the_process_despite_a_step_thread_stuck_forever(tmp_path):
    config, component = _blocking_config(tmp_path)
    proc, port, _ = await start_server_process(
        config, tmp_path, WORKFLOW_STEP_TIMEOUT="1s", WORKFLOW_SHUTDOWN_TIMEOUT="2s"
    )
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.get(f"http://127.0.0.1:{port}/spin") as response:
            assert response.status == 504
            body = await response.json()
        assert 1.0 <= time.monotonic() - started < 10
        assert body["error"] == "step 'spin' timed out after 1s"
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert time.monotonic() - signalled < 2 + 2
    assert proc.returncode == 0, err.decode()
    [line] = [line for line in _log_lines(err, "workflow.server") if "stuck" in line["message"]]
    assert line["message"] == f"exiting without 1 stuck thread(s): workflow-step_0 at {component}:{SPIN_LINE} in spin"


async def test_sigterm_ends_the_process_while_an_async_step_blocks_the_loop(tmp_path):
    config, component = _blocking_config(tmp_path)
    proc, port, _ = await start_server_process(config, tmp_path, WORKFLOW_SHUTDOWN_TIMEOUT="2s")
    assert proc.stderr is not None
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/hang"))
        seen = b""
        while b"event loop blocked" not in seen:  # the watchdog saw the step block the loop
            line = await asyncio.wait_for(proc.stderr.readline(), 15)
            assert line, "the server ended before its loop was blocked"
            seen += line
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert time.monotonic() - signalled < 2 + 2
        request.cancel()
    # Cut short, not drained: the exit status says so, and the log says where the loop was stuck.
    assert proc.returncode == 1, err.decode()
    [line] = [line for line in _log_lines(err, "workflow.server") if line["level"] == "error"]
    assert line["message"] == (
        f"shutdown did not finish within 3s (the loop's thread is at {component}:{HANG_LINE} in hang): exiting now"
    )


async def test_a_startup_hook_blocking_the_loop_delays_readiness_and_is_reported(tmp_path):
    (tmp_path / "components").mkdir()
    component = tmp_path / "components" / "slow_start.py"
    component.write_text(SLOW_STARTUP)
    config = tmp_path / "startup.yaml"
    config.write_text(
        "pipelines:\n  p:\n    trigger: {type: http, config: {path: /p, method: GET}}\n"
        "    steps:\n      - {name: s, type: step.set, config: {values: {a: 1}}}\n"
    )
    proc, port, _ = await start_server_process(config, tmp_path)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/p") as response:
            assert response.status == 200
            assert (await response.json())["a"] == 1
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            loop = (await response.json())["checks"]["loop"]
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert loop["status"] == "degraded"
    assert 1.9 <= loop["max_lag_seconds"] < 10
    assert loop["blocked_at"] == f"{component}:8 in startup"
    [warning] = [line for line in _log_lines(err, "workflow.loop") if line["level"] == "warning"]
    assert warning["blocked_at"] == f"{component}:8 in startup"
