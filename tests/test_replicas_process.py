"""Three real `workflow-server` processes sharing PostgreSQL and Redis converge, survive kills and empty folders.

The reconcile interval is 60 s, so only Redis change events and start-up reconciles can explain how fast
the replicas agree here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN, ROOT, SECRET, equals, free_port, hello, server_command

CONFIG = textwrap.dedent("""
    pipelines:
      hello:
        trigger: {type: http, config: {path: /hello, method: GET}}
        steps:
          - {name: hello, type: step.hello}
""")
API = "/api/dynamic/components"


class Replica:
    """One `workflow-server` process with its own folders and ports (kept across restarts)."""

    def __init__(self, name: str, root: Path, config: Path, env: dict[str, str]) -> None:
        self.name, self.config = name, config
        self.components, self.data = root / name / "components", root / name / "data"
        self.components.mkdir(parents=True)
        self.log = root / f"{name}.log"
        self.port, self.admin_port = free_port(), free_port()
        self.env = {
            **env,
            "WORKFLOW_REPLICA_ID": name,
            "WORKFLOW_COMPONENTS_DIR": str(self.components),
            "WORKFLOW_DATA_DIR": str(self.data),
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *server_command(self.config, f"127.0.0.1:{self.port}", f"127.0.0.1:{self.admin_port}"),
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def stopped(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as response:
            return response.status, await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return 0, None


async def version(session: aiohttp.ClientSession, replica: Replica) -> int | None:
    """The hello version this replica serves (None: not served)."""
    status, body = await _get(session, replica.url("/hello"))
    return body["version"] if status == 200 and isinstance(body, dict) else None


async def until(check, what: str, replicas: list[Replica], timeout: float = 10.0) -> Any:
    """Poll `check` until truthy; fail early when one of `replicas` (those expected up) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        for replica in replicas:
            if replica.proc is not None and replica.proc.returncode is not None:
                pytest.fail(f"{replica.name} exited ({replica.proc.returncode}):\n{replica.log.read_text()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {r.name}\n{r.log.read_text()[-3000:]}" for r in replicas)
            pytest.fail(f"not within {timeout}s: {what}\n{logs}")
        await asyncio.sleep(0.05)


async def listening(session: aiohttp.ClientSession, replica: Replica) -> bool:
    """Ready (the start-up reconcile is done) and subscribed to the other replicas' changes."""
    if (await _get(session, replica.url("/readyz")))[0] != 200:
        return False
    status, body = await _get(session, replica.url("/healthz"))
    return status == 200 and body["checks"]["replication"].get("redis") == "connected"


async def write(session: aiohttp.ClientSession, replica: Replica, method: str, path: str, body: Any) -> int:
    async with session.request(method, replica.admin_url(API + path), json=body, headers=ADMIN) as response:
        assert response.status in (200, 201), await response.text()
        return (await response.json())["version"]


async def test_three_processes_converge_survive_a_kill_and_refill_empty_folders(
    pg_schema_dsn: str, redis_addr: str, tmp_path: Path
) -> None:
    schema = pg_schema_dsn.split("search_path=")[1].rstrip("'")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "JWT_"))}
    env.update(
        WORKFLOW_DB_HOST="127.0.0.1",
        WORKFLOW_DB_NAME="test",
        WORKFLOW_DB_USER="postgres",
        WORKFLOW_DB_SCHEMA=schema,
        WORKFLOW_DB_POOL_SIZE="3",
        WORKFLOW_REDIS_ADDR=redis_addr,
        JWT_SECRET=SECRET,
        WORKFLOW_LOG_LEVEL="warning",
        WORKFLOW_LOG_FORMAT="text",
        WORKFLOW_RECONCILE_INTERVAL="60s",
        WORKFLOW_SHUTDOWN_TIMEOUT="5s",
        WORKFLOW_DRAIN_TIMEOUT="5s",
        WORKFLOW_COMPONENTS_DEBOUNCE="10ms",
    )
    replicas = [Replica(f"r{i}", tmp_path, config, env) for i in (1, 2, 3)]
    r1, r2, r3 = replicas

    async def all_serve(session: aiohttp.ClientSession, expected: int, among: list[Replica]) -> None:
        for replica in among:
            await until(
                lambda r=replica: equals(version(session, r), expected),
                f"{replica.name} serves version {expected}",
                among,
            )

    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(r.start() for r in replicas))
            for replica in replicas:
                await until(lambda r=replica: listening(session, r), f"{replica.name} ready", replicas, 20)
                assert await version(session, replica) is None

            assert await write(session, r1, "POST", "", {"id": "hello", "source": hello(1)}) == 1
            await all_serve(session, 1, replicas)

            assert await write(session, r2, "PUT", "/hello", {"source": hello(2)}) == 2
            await all_serve(session, 2, replicas)

            # r3 dies without a word; a change goes on meanwhile; r3 comes back with its old folder.
            r3.signal(signal.SIGKILL)
            assert await r3.stopped() == -signal.SIGKILL
            assert (r3.components / "hello.py").read_text() == hello(2)
            assert await write(session, r1, "PUT", "/hello", {"source": hello(3)}) == 3
            await all_serve(session, 3, [r1, r2])
            await r3.start()
            await until(
                lambda: equals(_get(session, r3.url("/readyz")), (200, {"status": "ready"})),
                "r3 ready again",
                replicas,
                20,
            )
            assert await version(session, r3) == 3  # ready means reconciled: the store's version serves
            assert (r3.components / "hello.py").read_text() == hello(3)

            # Every replica stops cleanly; every folder is emptied; all come back with the store's version.
            for replica in replicas:
                replica.signal(signal.SIGTERM)
            for replica in replicas:
                assert await replica.stopped() == 0, replica.log.read_text()
            for replica in replicas:
                shutil.rmtree(replica.components)
                replica.components.mkdir()
                shutil.rmtree(replica.data, ignore_errors=True)
            await asyncio.gather(*(r.start() for r in replicas))
            for replica in replicas:
                await until(
                    lambda r=replica: equals(_get(session, r.url("/readyz")), (200, {"status": "ready"})),
                    f"{replica.name} ready after the restart",
                    replicas,
                    20,
                )
                assert await version(session, replica) == 3
                assert (replica.components / "hello.py").read_text() == hello(3)
                assert not (replica.data / "conflicts").exists()

            # The listing on any replica shows what each one serves: all three at the store's version.
            async def listed_at_3() -> Any:
                status, body = await _get_admin(session, r2, API)
                if status != 200:
                    return None
                [entry] = [c for c in body["components"] if c["id"] == "hello"]
                at = {r["replica"]: (r["version"], r["status"]) for r in entry["replicas"]}
                return entry if at == {n: (3, "serving") for n in ("r1", "r2", "r3")} else None

            entry = await until(listed_at_3, "the listing shows r1, r2 and r3 serving version 3", replicas)
            assert entry["version"] == 3 and entry["status"] == "serving"
    finally:
        for replica in replicas:
            replica.signal(signal.SIGKILL)
        for replica in replicas:
            if replica.proc is not None:
                await asyncio.wait_for(replica.proc.wait(), 10)


async def _get_admin(session: aiohttp.ClientSession, replica: Replica, path: str) -> tuple[int, Any]:
    try:
        async with session.get(
            replica.admin_url(path), headers=ADMIN, timeout=aiohttp.ClientTimeout(total=3)
        ) as response:
            return response.status, await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return 0, None
