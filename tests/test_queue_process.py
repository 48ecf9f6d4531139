"""Real processes: an async job acknowledged with 202 survives a kill -9 and runs exactly once after a restart."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from server.queue.redis import deployment_prefix
from tests.conftest import SECRET
from tests.test_replicas_process import Replica, _get, until

# The step waits for the test's `go` file, then appends its execution id to `effects`: the side effect to count.
GATED = textwrap.dedent("""
    import asyncio
    import os

    from server import hookimpl


    async def gated(ctx):
        while not os.path.exists(ctx.config["go"]):
            await asyncio.sleep(0.02)
        with open(ctx.config["effects"], "a") as out:
            out.write(ctx.execution_id + "\\n")
        return {"written": True}


    @hookimpl
    def register_steps(register):
        register("step.gated", gated)
""")


def config(root: Path) -> str:
    return textwrap.dedent(f"""
        pipelines:
          effect:
            trigger: {{type: http, config: {{path: /effect, method: POST, async: true}}}}
            steps:
              - {{name: write, type: step.gated, config: {{go: "{root / "go"}", effects: "{root / "effects"}"}}}}
    """)


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def backend_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The process environment for each backend (Redis: the embedded store, the queue under its own deployment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "JWT_"))}
    env.update(
        JWT_SECRET=SECRET,
        WORKFLOW_LOG_LEVEL="warning",
        WORKFLOW_LOG_FORMAT="text",
        WORKFLOW_SHUTDOWN_TIMEOUT="5s",
        WORKFLOW_QUEUE_VISIBILITY_TIMEOUT="1s",
    )
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_schema_dsn")
        env.update(
            WORKFLOW_DB_HOST="127.0.0.1",
            WORKFLOW_DB_NAME="test",
            WORKFLOW_DB_USER="postgres",
            WORKFLOW_DB_SCHEMA=dsn.split("search_path=")[1].rstrip("'"),
            WORKFLOW_DB_POOL_SIZE="3",
        )
    if request.param != "redis":
        yield env
        return
    url, deployment = f"redis://{request.getfixturevalue('redis_addr')}", f"test-{secrets.token_hex(6)}"
    env.update(WORKFLOW_REDIS_ADDR=url, WORKFLOW_DEPLOYMENT=deployment)
    yield env
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=deployment_prefix(deployment).replace("{", "\\{") + "*"))
        if keys:
            client.delete(*keys)


async def test_a_stored_job_survives_kill_9_and_runs_exactly_once(backend_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(config(tmp_path))
    server = Replica("s", tmp_path, tmp_path / "config.yaml", backend_env)
    (server.components / "gated.py").write_text(GATED)
    effects = tmp_path / "effects"
    try:
        async with aiohttp.ClientSession() as session:
            await server.start()
            await until(lambda: ready(session, server), "ready", [server], 20)
            async with session.post(server.url("/effect"), json={"n": 1}) as response:
                assert response.status == 202
                execution_id = (await response.json())["execution_id"]
            # Claimed and waiting on the gate: the job is stored, nothing has happened yet.
            await until(lambda: status(session, server, execution_id, "running"), "running", [server])
            server.signal(signal.SIGKILL)
            assert await server.stopped() == -signal.SIGKILL
            assert not effects.exists()

            (tmp_path / "go").touch()
            await server.start()
            await until(lambda: ready(session, server), "ready again", [server], 20)
            # The dead process's claim expires after the 1 s visibility; then the job runs, once.
            await until(lambda: status(session, server, execution_id, "success"), "ran", [server], 15)
            await asyncio.sleep(1.5)  # longer than the visibility: a second delivery would show now
            assert effects.read_text() == execution_id + "\n"
            assert (await _get(session, server.url(f"/executions/{execution_id}")))[1]["status"] == "success"

            server.signal(signal.SIGTERM)
            assert await server.stopped() == 0, server.log.read_text()
    finally:
        server.signal(signal.SIGKILL)
        if server.proc is not None:
            await asyncio.wait_for(server.proc.wait(), 10)


async def ready(session: aiohttp.ClientSession, server: Replica) -> bool:
    return (await _get(session, server.url("/readyz")))[0] == 200


async def status(session: aiohttp.ClientSession, server: Replica, execution_id: str, expected: str) -> Any:
    code, body = await _get(session, server.url(f"/executions/{execution_id}"))
    return code == 200 and body["status"] == expected


@pytest.mark.parametrize("backend_env", ["postgres", "redis"], indirect=True)
async def test_a_replica_killed_mid_run_leaves_its_job_to_another(backend_env: dict[str, str], tmp_path: Path) -> None:
    env = backend_env  # replicas share PostgreSQL (the store, and the queue unless Redis carries it)
    (tmp_path / "config.yaml").write_text(config(tmp_path))
    first, second = (Replica(name, tmp_path, tmp_path / "config.yaml", env) for name in ("a", "b"))
    for replica in (first, second):
        (replica.components / "gated.py").write_text(GATED)
    effects = tmp_path / "effects"
    try:
        async with aiohttp.ClientSession() as session:
            await first.start()
            await until(lambda: ready(session, first), "a ready", [first], 20)
            async with session.post(first.url("/effect"), json={}) as response:
                execution_id = (await response.json())["execution_id"]
            await until(lambda: status(session, first, execution_id, "running"), "running on a", [first])
            await second.start()
            await until(lambda: ready(session, second), "b ready", [second], 20)
            # b sees a's job through the shared queue, running (a's heartbeat keeps extending the claim).
            assert await status(session, second, execution_id, "running")
            await asyncio.sleep(1.5)
            assert await status(session, second, execution_id, "running")
            first.signal(signal.SIGKILL)
            assert await first.stopped() == -signal.SIGKILL
            (tmp_path / "go").touch()
            await until(lambda: status(session, second, execution_id, "success"), "ran on b", [second], 15)
            await asyncio.sleep(1.5)
            assert effects.read_text() == execution_id + "\n"
            second.signal(signal.SIGTERM)
            assert await second.stopped() == 0, second.log.read_text()
    finally:
        for replica in (first, second):
            replica.signal(signal.SIGKILL)
            if replica.proc is not None:
                await asyncio.wait_for(replica.proc.wait(), 10)
