"""The event loop: uvloop by default (a real server process), asyncio's own on request or as the fallback."""

from __future__ import annotations

import asyncio
import os
import signal
from importlib import metadata
from pathlib import Path

import aiohttp
import pytest

from server.eventloop import loop_factory
from server.settings import SettingsError, from_environment
from tests.conftest import ROOT, free_port, hello, server_command

CONFIG = (
    "pipelines:\n  hello:\n    trigger: {type: http, config: {path: /hello, method: GET}}\n"
    "    steps:\n      - {name: hello, type: step.hello}\n"
)


def test_the_choice_is_read_once_and_checked() -> None:
    assert from_environment({}).event_loop == "auto"
    assert from_environment({"WORKFLOW_EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"
    with pytest.raises(SettingsError, match="WORKFLOW_EVENT_LOOP: 'tokio' is not auto, uvloop or asyncio"):
        from_environment({"WORKFLOW_EVENT_LOOP": "tokio"})
    assert loop_factory("asyncio") == (None, "asyncio")
    factory, name = loop_factory("auto")
    assert factory is not None and name.startswith("uvloop ")  # installed with the server (pyproject.toml)


async def _serve_once(tmp_path: Path, **env_vars: str) -> tuple[list[str], dict]:
    """Start a real server with the `hello` component (isolation on), GET /hello, stop it; its log and answer."""
    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "hello.py").write_text(hello(3))
    (tmp_path / "config.yaml").write_text(CONFIG)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")},
        "WORKFLOW_LOG_FORMAT": "text",
        "WORKFLOW_DATA_DIR": str(tmp_path / "data"),
        "WORKFLOW_COMPONENTS_DIR": str(tmp_path / "components"),
        **env_vars,
    }
    proc = await asyncio.create_subprocess_exec(
        *server_command(tmp_path / "config.yaml", f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    answer: dict = {}
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/hello") as response:
                        if response.status == 200:
                            answer = await response.json()
                            break
                except aiohttp.ClientConnectionError:
                    pass
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.05)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return err.decode().splitlines(), answer


async def test_the_server_runs_on_uvloop_and_checks_components_in_the_isolation_helper(tmp_path) -> None:
    lines, answer = await _serve_once(tmp_path)
    assert answer["version"] == 3  # imported in a candidate process first, then served
    loops = [line.split("workflow.server: ", 1)[1] for line in lines if "event loop:" in line]
    assert loops == [f"event loop: uvloop {metadata.version('uvloop')}"]
    assert any("loaded 1 component(s)" in line for line in lines)


async def test_asyncio_s_own_loop_on_request(tmp_path) -> None:
    lines, answer = await _serve_once(tmp_path, WORKFLOW_EVENT_LOOP="asyncio")
    assert answer["version"] == 3
    assert [line.split("workflow.server: ", 1)[1] for line in lines if "event loop:" in line] == ["event loop: asyncio"]
