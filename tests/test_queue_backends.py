"""The durable queue's contract (server/queue/base.py), run against each store backend: SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.errors import QueueUnavailable
from server.queue import Job, Queue
from server.queue.postgres import PostgresQueue
from server.queue.sqlite import SqliteQueue
from server.store import SqliteStore
from server.store.postgres import PostgresStore


@pytest.fixture(params=["sqlite", "postgres"])
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queue]:
    """An open queue on a freshly migrated store of each kind."""
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
