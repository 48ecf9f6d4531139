"""The real `workflow-server` process: start on free ports, serve, drain on SIGTERM, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import ROOT, free_port


async def _start(config: Path, tmp_path: Path, *extra: str) -> tuple[asyncio.subprocess.Process, int, int]:
    port, admin = free_port(), free_port()
    env = {**os.environ, "WORKFLOW_LOG_FORMAT": "json", "WORKFLOW_DATA_DIR": str(tmp_path / "data"),
           "WORKFLOW_COMPONENTS_DIR": str(tmp_path / "components")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "-config", str(config), "--addr", f"127.0.0.1:{port}",
        "-admin-addr", f"127.0.0.1:{admin}", *extra, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return proc, port, admin
            except aiohttp.ClientConnectionError:
                pass
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
    proc.kill()
    _, err = await proc.communicate()
    pytest.fail(f"server did not become ready:\n{err.decode()}")


async def test_serves_the_order_example_and_exits_cleanly_on_sigterm(tmp_path):
    proc, port, admin = await _start(ROOT / "example" / "order-processing-pipeline.yaml", tmp_path)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/api/orders",
                                json={"customer_id": "C-1", "total": 10}) as response:
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
    config.write_text(textwrap.dedent(f"""
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
    """))
    proc, port, _ = await _start(config, tmp_path)
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
    config.write_text("pipelines:\n  p:\n    trigger: {type: manual}\n    steps:\n"
                      "      - {name: s, type: step.set, config: {values: {k: '${WF_TEST_UNSET_VAR}'}}}\n")
    env = {k: v for k, v in os.environ.items() if k != "WF_TEST_UNSET_VAR"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--config", str(config), "--addr", "127.0.0.1:0",
        "--admin-addr", "127.0.0.1:0", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 1
    assert f"{config}:5: environment variable WF_TEST_UNSET_VAR is not set" in err.decode()
