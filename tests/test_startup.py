"""Start-up in the contract's order (CONTRACT §10): bind first, answer /livez throughout, ready last."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, MakeServer, server_command

SLOW_START = """
import asyncio
from server import hookimpl

async def slow(ctx):
    return {"slow": True}

@hookimpl
def register_steps(register):
    register("step.slow", slow)

@hookimpl
async def startup(services, logger):
    await asyncio.sleep(2.5)
"""

CONFIG = """
pipelines:
  slow:
    trigger: {type: http, config: {path: /slow, method: GET}}
    steps:
      - {name: s, type: step.slow}
"""


def _env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    return {
        **clean,
        "WORKFLOW_LOG_FORMAT": "json",
        "WORKFLOW_DATA_DIR": str(tmp_path / "data"),
        "WORKFLOW_COMPONENTS_DIR": str(tmp_path / "components"),
    }


def test_a_port_in_use_is_one_line_and_exit_1_before_anything_is_touched(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            server_command(config, f"127.0.0.1:{port}", "127.0.0.1:0"),
            cwd=ROOT,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"workflow-server: cannot listen on 127.0.0.1:{port} (main listener): Address already in use"
    )
    assert "Traceback" not in result.stderr
    # The store was never opened and the components folder never read or created.
    assert not (tmp_path / "data").exists() and not (tmp_path / "components").exists()


async def test_livez_answers_while_the_components_start_and_readyz_waits_for_them(tmp_path: Path) -> None:
    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "slow.py").write_text(SLOW_START)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *server_command(config, f"127.0.0.1:{port}", "127.0.0.1:0"),
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    seen: list[tuple[int, int, int]] = []
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            while time.monotonic() - started < 30:
                try:
                    live, ready, slow = [(await session.get(p)).status for p in ("/livez", "/readyz", "/slow")]
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
                    continue
                seen.append((live, ready, slow))
                if ready == 200:
                    break
                await asyncio.sleep(0.1)
            reason = await (await session.get("/readyz")).json()
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    # While the component's startup hook ran, the process was alive and said it was not ready yet.
    assert (200, 503, 503) in seen, seen
    assert seen[-1] == (200, 200, 200) and reason == {"status": "ready"}
    assert proc.returncode == 0, err.decode()


@pytest.mark.parametrize(
    "example", ["chat-triage-pipeline.yaml", "order-pricing-pipeline.yaml", "order-processing-pipeline.yaml"]
)
async def test_the_shipped_examples_start_without_unknown_step_type_warnings(
    make_server: MakeServer, example: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workflow")
    text = (ROOT / "example" / example).read_text()
    server = await make_server(text, components_dir=ROOT / "components", watch=False)
    assert (await server.client.get("/readyz")).status == 200
    assert [r.getMessage() for r in caplog.records if "unknown step type" in r.getMessage()] == []


def test_validate_still_reports_a_step_type_nothing_provides(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    result = subprocess.run(
        [sys.executable, "-m", "server", "validate", str(config)],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{config}:6: pipeline 'slow', step 's': unknown step type 'step.slow'" in result.stderr
