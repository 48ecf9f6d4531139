"""The durable queue's contract (server/queue/base.py), run against each backend: SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from server.errors import QueueUnavailable
from server.queue import Job, Queue
from server.queue.postgres import PostgresQueue
from server.queue.redis import RedisQueue, deployment_prefix
from server.queue.sqlite import SqliteQueue
from server.store import SqliteStore
from server.store.postgres import PostgresStore


async def delete_keys(url: str, deployment: str) -> None:
    """Remove a test deployment's keys from the shared Redis."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=deployment_prefix(deployment).replace("{", "\\{") + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queue]:
    """An open queue on a freshly migrated store of each kind, or on Redis under a deployment of its own."""
    if request.param == "redis":
        url = f"redis://{request.getfixturevalue('redis_addr')}"
        deployment = f"test-{secrets.token_hex(6)}"
        redis_queue = RedisQueue(url, deployment)
        await redis_queue.open()
        try:
            yield redis_queue
        finally:
            await redis_queue.close()
            await delete_keys(url, deployment)
        return
    if request.param == "sqlite":
        store: SqliteStore | PostgresStore = SqliteStore(tmp_path / "q.db")
        backend: Queue = SqliteQueue(tmp_path / "q.db")
    else:
        dsn = request.getfixturevalue("pg_schema_dsn")
        store, backend = PostgresStore(dsn), PostgresQueue(dsn)
    await store.open()
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
        await store.close()


def job(n: int, **payload: object) -> Job:
    return Job(f"job-{n}", "p", "http", dict(payload))


async def test_enqueue_then_claim_returns_the_job_with_its_payload(queue: Queue) -> None:
    assert await queue.enqueue(job(1, a=1, b=[2, "x"])) is True
    [claimed] = await queue.claim("c1", 10, 30)
    assert (claimed.id, claimed.pipeline, claimed.workflow_type, claimed.payload) == (
        "job-1",
        "p",
        "http",
        {"a": 1, "b": [2, "x"]},
    )
    assert claimed.attempts == 1
    assert claimed.receipt is not None
    assert await queue.status("job-1") == ("running", None)
    assert await queue.ack(claimed) is True
    assert await queue.status("job-1") is None
    assert await queue.claim("c1", 10, 30) == []


async def test_a_dedupe_key_stores_once_within_its_ttl_then_again_after(queue: Queue) -> None:
    assert await queue.enqueue(job(1), "slack:E1", 0.5) is True
    assert await queue.enqueue(job(2), "slack:E1", 0.5) is False
    assert await queue.status("job-2") is None  # the duplicate stored nothing
    assert (await queue.stats()).depth == 1
    await asyncio.sleep(0.6)
    assert await queue.enqueue(job(3), "slack:E1", 0.5) is True
    assert [j.id for j in await queue.claim("c", 10, 30)] == ["job-1", "job-3"]


async def test_prune_deletes_only_expired_keys(queue: Queue) -> None:
    await queue.enqueue(job(1), "old", 0.1)
    await queue.enqueue(job(2), "new", 3600)
    await asyncio.sleep(0.2)
    assert await queue.prune() == 1
    assert await queue.enqueue(job(3), "new", 3600) is False
    assert await queue.enqueue(job(4), "old", 3600) is True


async def test_a_burst_of_more_enqueues_than_connections_is_stored_not_refused(queue: Queue) -> None:
    # 150 at once: more than Redis's pool of 100 connections (bench_chat.py saw "Too many connections" 503s).
    stored = await asyncio.gather(*(queue.enqueue(job(n), f"burst:{n}") for n in range(150)))
    assert stored == [True] * 150
    assert (await queue.stats()).depth == 150


async def test_two_consumers_never_claim_the_same_job(queue: Queue) -> None:
    for n in range(40):
        await queue.enqueue(job(n))
    batches = await asyncio.gather(*(queue.claim(f"c{i}", 7, 30) for i in range(8)))
    ids = [j.id for batch in batches for j in batch]
    assert sorted(ids) == sorted(f"job-{n}" for n in range(40))
    assert len(ids) == len(set(ids)) == 40


async def test_an_expired_claim_is_delivered_again_and_the_old_receipt_is_refused(queue: Queue) -> None:
    await queue.enqueue(job(1))
    [first] = await queue.claim("dead-worker", 1, 0.2)
    assert await queue.claim("other", 1, 30) == []
    await asyncio.sleep(0.3)
    [again] = await queue.claim("other", 1, 30)
    assert (again.id, again.attempts) == ("job-1", 2)
    assert await queue.ack(first) is False  # the dead worker's late ack changes nothing
    assert await queue.extend(first, 30) is False
    assert await queue.status("job-1") == ("running", None)
    assert await queue.ack(again) is True


async def test_extend_keeps_a_claim_past_its_first_visibility(queue: Queue) -> None:
    await queue.enqueue(job(1))
    [claimed] = await queue.claim("c", 1, 0.3)
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await queue.extend(claimed, 0.3) is True
    assert await queue.claim("other", 1, 30) == []
    assert await queue.ack(claimed) is True


async def test_retry_waits_its_delay_and_keeps_the_error(queue: Queue) -> None:
    await queue.enqueue(job(1))
    [claimed] = await queue.claim("c", 1, 30)
    assert await queue.retry(claimed, "boom", 0.4) is True
    assert await queue.status("job-1") == ("queued", "boom")
    assert await queue.claim("c", 1, 30) == []
    await asyncio.sleep(0.5)
    [again] = await queue.claim("c", 1, 30)
    assert (again.attempts, again.last_error) == (2, "boom")


async def test_bury_moves_to_the_dead_list_and_requeue_brings_it_back(queue: Queue) -> None:
    await queue.enqueue(job(1, x=1))
    await queue.enqueue(job(2))
    [claimed, _] = await queue.claim("c", 2, 30)
    assert await queue.bury(claimed, "error: always fails") is True
    assert await queue.status("job-1") == ("dead", "error: always fails")
    [dead] = await queue.dead(10)
    assert (dead.id, dead.attempts, dead.last_error, dead.payload) == ("job-1", 1, "error: always fails", {"x": 1})
    assert await queue.claim("c", 10, 30) == []  # a dead job is never claimed
    assert await queue.requeue("job-1") is True
    assert await queue.requeue("job-1") is False  # no longer dead
    assert await queue.requeue("nope") is False
    [back] = await queue.claim("c", 10, 30)
    assert (back.id, back.attempts) == ("job-1", 1)


async def test_stats_count_waiting_and_running_and_age_the_oldest(queue: Queue) -> None:
    assert (await queue.stats()).depth == 0
    assert (await queue.stats()).oldest_age == 0.0
    old = job(1)
    old.enqueued_at = time.time() - 30
    await queue.enqueue(old)
    await queue.enqueue(job(2))
    await queue.enqueue(job(3))
    [a] = await queue.claim("c", 1, 30)
    assert a.id == "job-1"  # oldest first
    [b] = await queue.claim("c", 1, 30)
    await queue.bury(b, "x")
    stats = await queue.stats()
    assert (stats.depth, stats.dead) == (2, 1)
    assert 30 <= stats.oldest_age < 35
    pending = await queue.pending(10)
    assert [(j.id, status) for j, status in pending] == [("job-1", "running"), ("job-3", "queued")]


async def test_a_closed_queue_raises_queue_unavailable(queue: Queue) -> None:
    await queue.close()
    with pytest.raises(QueueUnavailable) as caught:
        await queue.enqueue(job(1))
    assert caught.value.status == 503
    await queue.open()


@pytest.fixture
async def redis_queue(redis_addr: str) -> AsyncIterator[RedisQueue]:
    """A Redis queue under a deployment of its own, its keys deleted afterwards."""
    url, deployment = f"redis://{redis_addr}", f"test-{secrets.token_hex(6)}"
    backend = RedisQueue(url, deployment)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
        await delete_keys(url, deployment)


async def test_redis_trimming_keeps_pending_entries_and_a_dead_consumers_job_is_claimed_again(
    redis_queue: RedisQueue, redis_addr: str
) -> None:
    client = aioredis.Redis.from_url(f"redis://{redis_addr}", decode_responses=True)
    stream = redis_queue.prefix + "stream"
    try:
        # An entry delivered and acknowledged but never deleted, older than every job: trimming is what removes it.
        await client.xadd(stream, {"id": "stray"})
        [[_, [(stray, _)]]] = await client.xreadgroup("workers", "someone", {stream: ">"}, count=1)
        await client.xack(stream, "workers", stray)
        for n in range(5):
            await redis_queue.enqueue(job(n))
        [held] = await redis_queue.claim("dead-consumer", 1, 0.3)  # job-0: its consumer dies holding it
        done = await redis_queue.claim("live-consumer", 2, 30)
        for finished in done:
            assert await redis_queue.ack(finished) is True
        entries_before = await client.xlen(stream)
        await redis_queue.prune()
        entries = [e for e, _ in await client.xrange(stream)]
        pending = await client.xpending_range(stream, "workers", "-", "+", 10)
        assert [p["message_id"] for p in pending] == [entries[0]]  # the pending entry is the oldest one kept
        assert len(entries) == entries_before - 1 == 3  # the stray went, job-0 (pending) and job-3/4 (waiting) stay
        assert [j.id for j in await redis_queue.claim("live-consumer", 10, 30)] == ["job-3", "job-4"]
        assert await redis_queue.claim("other", 1, 30) == []  # job-0 is still within its visibility
        await asyncio.sleep(0.4)
        await redis_queue.prune()
        [again] = await redis_queue.claim("other", 1, 30)  # XCLAIM: the entry moves to the live consumer
        assert (again.id, again.attempts) == (held.id, 2)
        [moved] = await client.xpending_range(stream, "workers", "-", "+", 10, consumername="other")
        assert moved["times_delivered"] == 1 + 1
        assert await redis_queue.ack(held) is False  # the dead consumer's receipt is fenced off
        assert await redis_queue.ack(again) is True
        assert (await redis_queue.stats()).depth == 2  # job-3 and job-4, still running
    finally:
        await client.aclose()


async def test_redis_deployment_defaults_to_the_stores_identity(tmp_path: Path) -> None:
    from server.queue import open_queue
    from server.settings import from_environment

    embedded = from_environment({"WORKFLOW_REDIS_ADDR": "h:1", "WORKFLOW_DATA_DIR": str(tmp_path)})
    assert embedded.deployment_name == str((tmp_path / "workflow.db").resolve())
    pg = from_environment({"WORKFLOW_DB_HOST": "db:5433", "WORKFLOW_DB_NAME": "wf"})
    assert pg.deployment_name.startswith("db:5433/wf/")
    on_redis = {"WORKFLOW_REDIS_ADDR": "h:1", "WORKFLOW_DEPLOYMENT": "blue"}
    queue = open_queue(from_environment(on_redis))
    assert isinstance(queue, RedisQueue)
    assert queue.prefix == "workflow:{blue}:queue:"


def test_the_queue_is_on_redis_when_redis_is_configured_unless_told_to_stay_in_the_store(tmp_path: Path) -> None:
    from server.queue import open_queue
    from server.queue.sqlite import SqliteQueue
    from server.settings import SettingsError, from_environment

    data = {"WORKFLOW_DATA_DIR": str(tmp_path)}
    assert isinstance(open_queue(from_environment({**data, "WORKFLOW_REDIS_ADDR": "h:1"})), RedisQueue)
    assert isinstance(open_queue(from_environment(data)), SqliteQueue)
    stay = {**data, "WORKFLOW_REDIS_ADDR": "h:1", "WORKFLOW_QUEUE_BACKEND": "store"}
    assert isinstance(open_queue(from_environment(stay)), SqliteQueue)
    with pytest.raises(SettingsError, match="WORKFLOW_QUEUE_BACKEND: the queue on Redis needs WORKFLOW_REDIS_ADDR"):
        from_environment({"WORKFLOW_QUEUE_BACKEND": "redis"})
    with pytest.raises(SettingsError, match="WORKFLOW_QUEUE_BACKEND: 'kafka' is neither 'redis' nor 'store'"):
        from_environment({"WORKFLOW_QUEUE_BACKEND": "Kafka"})


async def test_concurrent_enqueues_with_duplicates_store_each_key_once(queue: Queue) -> None:
    # 200 at once, 80 of them repeating a key of the others or one stored before: exactly one job per key.
    assert await queue.enqueue(job(1000), "dup:0") is True
    keys = [f"dup:{n % 120}" for n in range(200)]
    stored = await asyncio.gather(*(queue.enqueue(job(n), key) for n, key in enumerate(keys)))
    by_key: dict[str, int] = {}
    for key, was_stored in zip(keys, stored, strict=True):
        by_key[key] = by_key.get(key, 0) + was_stored
    assert by_key == {f"dup:{n}": 0 if n == 0 else 1 for n in range(120)}
    assert (await queue.stats()).depth == 120
    for n, was_stored in enumerate(stored):
        assert (await queue.status(f"job-{n}") is not None) is was_stored


async def test_redis_concurrent_enqueues_go_in_few_script_calls_with_each_callers_own_result(
    redis_queue: RedisQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    run = redis_queue._run

    async def counted(script: str, *args: object) -> object:
        if script == "enqueue":
            calls.append(len(args) // 6)
        return await run(script, *args)

    monkeypatch.setattr(redis_queue, "_run", counted)
    assert await redis_queue.enqueue(job(1000), "dup:7") is True
    keys = [f"dup:{n % 120}" for n in range(200)]
    stored = await asyncio.gather(*(redis_queue.enqueue(job(n), key) for n, key in enumerate(keys)))
    # In order within a batch: the first caller of each key stores, the later ones (and dup:7's) are duplicates.
    assert stored == [n < 120 and n != 7 for n in range(200)]
    assert calls == [1, 200]  # the 200 arrived in one loop iteration: one script call
    claimed = await redis_queue.claim("c", 300, 30)
    assert len(claimed) == 120
    settled = await asyncio.gather(*(redis_queue.ack(j) for j in claimed), redis_queue.ack(claimed[0]))
    assert settled == [True] * 120 + [False]  # the repeated ack comes after the first in the same batch
    assert (await redis_queue.stats()).depth == 0


class DroppingProxy:
    """A TCP proxy to Redis that, while `dropping`, closes each connection as soon as a request arrives."""

    def __init__(self, target: str) -> None:
        host, _, port = target.partition(":")
        self.target = (host, int(port or 6379))
        self.dropping = False
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, requests: bool) -> None:
            try:
                while data := await src.read(65536):
                    if requests and self.dropping:
                        break  # the request never reaches Redis: an outage in the middle of the batch
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                writer.close()
                upstream_writer.close()

        await asyncio.gather(pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_redis_an_outage_during_a_batch_fails_each_of_its_callers_with_queue_unavailable(
    redis_addr: str,
) -> None:
    proxy = DroppingProxy(redis_addr)
    await proxy.start()
    url, deployment = f"redis://127.0.0.1:{proxy.port}", f"test-{secrets.token_hex(6)}"
    backend = RedisQueue(url, deployment)
    await backend.open()
    try:
        assert await backend.enqueue(job(0), "out:0") is True
        proxy.dropping = True
        outcome = await asyncio.gather(
            *(backend.enqueue(job(n), f"out:{n}") for n in range(1, 51)), return_exceptions=True
        )
        assert all(isinstance(e, QueueUnavailable) and e.status == 503 for e in outcome), outcome
        assert len({id(e) for e in outcome}) == 50  # each caller its own exception
        proxy.dropping = False
        assert await backend.status("job-1") is None  # nothing of the failed batch was stored
        stored = await asyncio.gather(*(backend.enqueue(job(n), f"out:{n}") for n in range(51)))
        assert stored == [False] + [True] * 50  # the platform's retries are stored now; out:0 was already
    finally:
        await backend.close()
        await proxy.stop()
        await delete_keys(f"redis://{redis_addr}", deployment)


async def test_redis_kept_connections_closed_by_redis_are_opened_again(
    redis_queue: RedisQueue, redis_addr: str
) -> None:
    # The enqueue, settle and claim calls each keep a connection of their own: one that Redis closed since (a
    # restart, an idle timeout) costs no 503, the call goes on a new one.
    assert await redis_queue.enqueue(job(1)) is True
    [claimed] = await redis_queue.claim("c", 1, 30)
    assert await redis_queue.extend(claimed, 30) is True
    client = aioredis.Redis.from_url(f"redis://{redis_addr}", decode_responses=True)
    try:
        for link in redis_queue._links.values():
            host, port = link._conn._writer.get_extra_info("sockname")[:2]
            assert await client.client_kill_filter(_type=None, addr=f"{host}:{port}") == 1
    finally:
        await client.aclose()
    for _ in range(100):  # until the loop has seen each close
        if all(link._conn._reader.at_eof() for link in redis_queue._links.values()):
            break
        await asyncio.sleep(0.01)
    assert await redis_queue.enqueue(job(2)) is True
    assert await redis_queue.ack(claimed) is True
    assert [j.id for j in await redis_queue.claim("c", 5, 30)] == ["job-2"]
