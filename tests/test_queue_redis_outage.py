"""The queue on a Redis of the test's own: stopped while events arrive, and restarted from its append-only file."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.chat_fake import FakeApi, chat_config
from tests.conftest import free_port, metric_value, service_unavailable, until
from tests.pipeline_plugin import CALLS
from tests.test_chat_slack import envelope, slack

PIPELINES = """
  triage:
    trigger: {type: chat, config: {platform: slack, channel: C1}}
    steps:
      - {name: seen, type: test.record}
  gated:
    trigger: {type: http, config: {path: /gated, method: POST, async: true}}
    steps:
      - {name: wait, type: test.sleep, config: {seconds: 1.5}}
      - {name: seen, type: test.record}
"""


class PrivateRedis:
    """A redis-server process on a free loopback port, its data in `folder`; stopped with SIGKILL, as a crash."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, *, aof: bool) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"]
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.proc = subprocess.Popen(
            [*command, "--dir", str(self.folder), *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        service_unavailable("redis-server is not installed: these tests run a Redis of their own")
    server = PrivateRedis(tmp_path)
    try:
        yield server
    finally:
        server.kill()


async def test_events_while_redis_is_down_get_503_and_run_once_it_is_back(
    serve: Any, fake_api: FakeApi, private_redis: PrivateRedis
) -> None:
    private_redis.start(aof=False)
    srv = await serve(chat_config(fake_api.url, PIPELINES), redis_addr=private_redis.url)
    await until(lambda: srv.engine.ready)
    assert await slack(srv, envelope("Ev1")) == (200, "")
    await until(lambda: len(CALLS) == 1)

    private_redis.kill()
    status, text = await slack(srv, envelope("Ev2"))
    assert status == 503 and "queue" in text
    assert await slack(srv, envelope("Ev3")) == (503, text)
    health = await (await srv.client.get("/healthz")).json()
    assert health["checks"]["queue"]["backend"] == "redis"

    private_redis.start(aof=False)  # back, empty: the consumer group is created again on the next claim
    # Slack retries what was refused: the retry is a new event, accepted and run once.
    assert await slack(srv, envelope("Ev2"), **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"}) == (
        200,
        "",
    )
    assert await slack(srv, envelope("Ev3")) == (200, "")
    await until(lambda: len(CALLS) == 3, timeout=10)
    assert sorted(call["trigger"]["event_id"] for call in CALLS) == ["Ev1", "Ev2", "Ev3"]
    assert await slack(srv, envelope("Ev3")) == (200, "")  # and a repeat is still a duplicate
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="slack", outcome="accepted") == 3
    assert metric_value(metrics, "chat_events_total", platform="slack", outcome="duplicate") == 1


async def test_acknowledged_jobs_survive_a_crash_of_a_redis_with_an_fsynced_aof(
    serve: Any, fake_api: FakeApi, private_redis: PrivateRedis
) -> None:
    private_redis.start(aof=True)
    srv = await serve(
        chat_config(fake_api.url, PIPELINES),
        redis_addr=private_redis.url,
        async_workers=1,
        queue_visibility=10.0,
    )
    await until(lambda: srv.engine.ready)
    ids = []
    for n in range(5):
        response = await srv.client.post("/gated", json={"n": n})
        assert response.status == 202
        ids.append((await response.json())["execution_id"])
    for n in range(5):
        assert await slack(srv, envelope(f"Ev{n}")) == (200, "")

    private_redis.kill()  # the first job is running, the others wait in the stream: all acknowledged
    private_redis.start(aof=True)

    await until(lambda: len(CALLS) == 10, timeout=30)
    ran = sorted(str(call["trigger"].get("n", call["trigger"].get("event_id"))) for call in CALLS)
    assert ran == sorted([str(n) for n in range(5)] + [f"Ev{n}" for n in range(5)])
    for execution_id in ids:
        body = await (await srv.client.get(f"/executions/{execution_id}")).json()
        assert body["status"] == "success"
    metrics = await srv.metrics()
    assert metric_value(metrics, "queue_jobs_total", outcome="done") == 10
