"""Outages of the services replicas share: the request path keeps serving and replicas catch up afterwards.

Redis: a private `redis-server` this test stops and starts again on the same port.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from server.keys import REPLICATOR
from tests.conftest import Replica, StartReplica, equals, free_port, hello, listening, ready, service_unavailable, until

OUTAGE = 15.0  # the reconnect backoff is capped at 5 s (7.5 s with jitter): generous, still bounded


class PrivateRedis:
    """A `redis-server` of this test's own, without persistence, that can be stopped and started again."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._pong():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def _pong(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        service_unavailable("redis-server is not installed")
    folder = tmp_path / "redis"
    folder.mkdir()
    redis = PrivateRedis(free_port(), folder)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def redis_addr(private_redis: PrivateRedis) -> str:
    """The replicas of this module (conftest's `start_replica`) use the private Redis, not the shared one."""
    return private_redis.addr


async def replication(replica: Replica) -> dict[str, Any]:
    return (await replica.health())["checks"]["replication"]


async def health_is(replica: Replica, status: str, redis: str) -> bool:
    body = await replica.health()
    check = body["checks"]["replication"]
    return body["status"] == status and check["status"] == status and check.get("redis") == redis


async def test_a_redis_outage_degrades_health_keeps_serving_and_replicas_catch_up_after(
    start_replica: StartReplica, private_redis: PrivateRedis
) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    for replica in (a, b):
        await until(lambda r=replica: listening(r))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    await until(lambda: equals(b.version(), 1))

    private_redis.stop()
    for replica in (a, b):
        await until(lambda r=replica: health_is(r, "degraded", "disconnected"), timeout=OUTAGE)
        response = await replica.client.get("/healthz")
        assert (response.status, (await response.json())["status"]) == (200, "degraded")  # degraded, not down
        assert (await replication(replica))["error"]
        # The request path does not need Redis: synchronous pipelines and components keep answering.
        ping = await replica.client.get("/ping")
        assert ping.status == 200 and await ping.json() == {"pong": True}
        assert await replica.version() == 1
    reconciles = b.client.app[REPLICATOR].reconciles

    # The store is up, so a change through a's API succeeds and serves on a; b cannot hear of it yet.
    status, body = await a.call("PUT", "/hello", {"source": hello(2)})
    assert status == 200 and body["version"] == 2
    assert await a.version() == 2
    assert await b.version() == 1
    assert b.client.app[REPLICATOR].reconciles == reconciles  # the periodic reconcile (60 s) has not run

    await asyncio.sleep(2.0)  # a real outage: several reconnect attempts fail and the backoff grows
    assert not b.client.app[REPLICATOR].bus.connected and await b.version() == 1
    private_redis.start()  # same port
    # b resubscribes after its backoff and reconciles everything, because events sent meanwhile are lost.
    await until(lambda: equals(b.version(), 2), timeout=OUTAGE)
    for replica in (a, b):
        await until(lambda r=replica: health_is(r, "ok", "connected"), timeout=OUTAGE)
        assert replica.client.app[REPLICATOR].bus.reconnects >= 1
    assert (b.folder / "hello.py").read_text() == hello(2)
    await until(lambda: b.client.app[REPLICATOR].reconciles > reconciles)  # the one after reconnecting

    # Events flow again: a change through b reaches a without a reconcile of its own.
    assert (await b.call("PUT", "/hello", {"source": hello(3)}))[0] == 200
    await until(lambda: equals(a.version(), 3))
    assert await ready(a) and await ready(b)
