"""The durable queue in a running server: async triggers, retries, dead letters, the admin API, health, schedules."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
import redis

from server.keys import QUEUE
from server.queue.redis import deployment_prefix
from server.settings import Database
from tests.conftest import ADMIN, SECRET, metric_value, token, until
from tests.pipeline_plugin import CALLS, FLAKY

ASYNC = """
    pipelines:
      work:
        trigger: {type: http, config: {path: /work, method: POST, async: true}}
        steps:
          - {name: rec, type: test.record, config: {output: {done: "{{ .n }}"}}}
      flaky:
        trigger: {type: http, config: {path: /flaky, method: POST, async: true}}
        steps:
          - {name: flaky, type: test.flaky}
      slow:
        trigger: {type: http, config: {path: /slow, method: POST, async: true}}
        steps:
          - {name: nap, type: test.sleep, config: {seconds: 0.6}}
"""


@pytest.fixture(autouse=True)
def flaky_fails() -> None:
    FLAKY["fail"] = True


async def status_of(server: Any, execution_id: str) -> str | None:
    response = await server.client.get(f"/executions/{execution_id}")
    return (await response.json())["status"] if response.status == 200 else None


async def test_an_async_trigger_answers_202_once_stored_and_runs_once(serve) -> None:
    server = await serve(ASYNC)
    response = await server.client.post("/work", json={"n": 7})
    assert response.status == 202
    body = await response.json()
    assert body == {"execution_id": body["execution_id"], "status": "queued", "location": body["location"]}
    assert response.headers["Location"] == f"/executions/{body['execution_id']}"
    await until(lambda: status_of(server, body["execution_id"]), 5)
    await until(lambda: equals_async(status_of(server, body["execution_id"]), "success"))
    assert [c["execution_id"] for c in CALLS] == [body["execution_id"]]
    answer = await (await server.client.get(body["location"])).json()
    assert answer["result"]["done"] == 7
    text = await (await server.client.get("/metrics")).text()
    assert metric_value(text, "queue_jobs_total", outcome="done") == 1
    await until(lambda: equals_async(depth(server), 0))


async def equals_async(value: Any, expected: Any) -> bool:
    return await value == expected


async def depth(server: Any) -> float:
    return metric_value(await (await server.client.get("/metrics")).text(), "workflow_queue_depth")


async def test_a_job_failing_every_time_goes_dead_and_retry_reruns_it(serve) -> None:
    server = await serve(ASYNC, queue_max_attempts=2, queue_retry_delay=0.05, jwt_secret=SECRET)
    execution_id = (await (await server.client.post("/flaky", json={"secret": "x"})).json())["execution_id"]
    await until(lambda: equals_async(status_of(server, execution_id), "dead"))

    dead = await (await server.admin.get("/api/queue/dead", headers=ADMIN)).json()
    [entry] = dead["dead"]
    assert entry == {
        "id": execution_id,
        "kind": "pipeline",
        "pipeline": "flaky",
        "workflow_type": "http",
        "attempts": 2,
        "enqueued_at": entry["enqueued_at"],
        "error": "error: flaky step failed",
    }
    assert "secret" not in str(dead)  # never the payload
    text = await (await server.client.get("/metrics")).text()
    assert metric_value(text, "queue_jobs_total", outcome="retried") == 1
    assert metric_value(text, "queue_jobs_total", outcome="dead") == 1

    viewer = token(role="viewer")
    assert (await server.admin.post(f"/api/queue/dead/{execution_id}/retry", headers=viewer)).status == 403
    assert (await server.admin.post(f"/api/queue/dead/{execution_id}/retry")).status == 401
    FLAKY["fail"] = False
    response = await server.admin.post(f"/api/queue/dead/{execution_id}/retry", headers=ADMIN)
    assert (response.status, await response.json()) == (200, {"id": execution_id, "status": "queued"})
    await until(lambda: equals_async(status_of(server, execution_id), "success"))
    assert await (await server.admin.get("/api/queue/dead", headers=ADMIN)).json() == {"dead": []}
    missing = await server.admin.post(f"/api/queue/dead/{execution_id}/retry", headers=ADMIN)
    assert (missing.status, await missing.json()) == (404, {"error": f"no dead job {execution_id!r}"})


async def test_the_queue_listing_shows_running_and_waiting_jobs_without_payloads(serve) -> None:
    server = await serve(ASYNC, async_workers=1, jwt_secret=SECRET)
    first = (await (await server.client.post("/slow", json={"card": "4111"})).json())["execution_id"]
    second = (await (await server.client.post("/slow", json={})).json())["execution_id"]
    await until(lambda: equals_async(status_of(server, first), "running"))
    listing = await (await server.admin.get("/api/queue", headers=ADMIN)).json()
    jobs = listing.pop("jobs")
    assert listing["backend"] == "sqlite"
    assert (listing["depth"], listing["dead"]) == (2, 0)
    assert 0 <= listing["oldest_age_seconds"] < 5
    assert [(j["id"], j["status"], j["attempts"], j["pipeline"], j["kind"]) for j in jobs] == [
        (first, "running", 1, "slow", "pipeline"),
        (second, "queued", 0, "slow", "pipeline"),
    ]
    assert "4111" not in str(jobs)
    bad = await server.admin.get("/api/queue?limit=0", headers=ADMIN)
    assert (bad.status, await bad.json()) == (
        400,
        {"error": "limit must be a whole number from 1 to 1000", "field": "limit"},
    )
    await until(lambda: equals_async(status_of(server, second), "success"), 5)


async def test_an_unreachable_queue_answers_503_and_shows_in_healthz(serve) -> None:
    server = await serve(ASYNC)
    queue = server.client.app[QUEUE]
    await queue.queue.close()
    response = await server.client.post("/work", json={})
    assert (response.status, await response.json()) == (503, {"error": "the queue is not open"})
    health = await until(lambda: degraded_health(server))
    assert health["checks"]["queue"] == {
        "status": "degraded",
        "backend": "sqlite",
        "depth": 0,
        "dead": 0,
        "oldest_age_seconds": 0.0,
        "workers": 8,
        "running": 0,
        "error": "the queue is not open",
    }
    await queue.queue.open()
    await until(lambda: ok_health(server))


async def degraded_health(server: Any) -> dict[str, Any] | None:
    body = await (await server.client.get("/healthz")).json()
    return body if body["checks"]["queue"]["status"] == "degraded" else None


async def ok_health(server: Any) -> bool:
    body = await (await server.client.get("/healthz")).json()
    return bool(body["checks"]["queue"]["status"] == "ok")


async def test_publish_goes_through_the_queue(serve) -> None:
    server = await serve("""
        pipelines:
          emit:
            trigger: {type: http, config: {path: /emit, method: POST}}
            steps:
              - {name: pub, type: step.publish, config: {topic: orders}}
          listen:
            trigger: {type: event, config: {topic: orders}}
            steps:
              - {name: rec, type: test.record}
    """)
    assert (await server.client.post("/emit", json={"id": 3})).status == 200
    await until(lambda: len(CALLS) == 1)
    await until(lambda: equals_async(metric(server, "queue_jobs_total", outcome="done"), 1))


async def metric(server: Any, name: str, **labels: str) -> float:
    return metric_value(await (await server.client.get("/metrics")).text(), name, **labels)


async def test_an_execution_answers_from_another_replica_through_the_store(serve, tmp_path) -> None:
    one = await serve(ASYNC)
    two = await serve(ASYNC)  # the same data folder: the same SQLite file, store and queue
    execution_id = (await (await one.client.post("/work", json={"n": 1})).json())["execution_id"]
    await until(lambda: equals_async(status_of(two, execution_id), "success"), 10)
    body = await (await two.client.get(f"/executions/{execution_id}")).json()
    assert body == {"id": execution_id, "pipeline": "work", "status": "success", "result": body["result"]}
    assert body["result"]["done"] == 1
    unknown = await two.client.get("/executions/nope")
    assert unknown.status == 404


SCHEDULED = """
    pipelines:
      tick:
        trigger: {type: schedule, config: {interval: 1s}}
        steps:
          - {name: rec, type: test.record}
"""


async def test_two_servers_on_one_postgresql_fire_each_schedule_slot_once(serve, database: Database) -> None:
    await serve(SCHEDULED, db=database, replica_id="a")
    await serve(SCHEDULED, db=database, replica_id="b")
    await until(lambda: len(CALLS) >= 3, 10)
    await asyncio.sleep(0.5)
    slots = [c["trigger"]["slot"] for c in CALLS]
    assert len(slots) == len(set(slots))
    assert slots == list(range(slots[0], slots[0] + len(slots)))


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_jobs_slower_than_their_visibility_keep_their_claims_and_run_once(
    serve, backend: str, request: pytest.FixtureRequest
) -> None:
    # One heartbeat task extends every running job's claim (a third of the 0.3 s visibility): four jobs of 0.6 s
    # each outlive two visibilities, and none is handed to the other consumer claiming all the while.
    overrides: dict[str, Any] = {"queue_visibility": 0.3, "async_workers": 4}
    if backend == "redis":
        deployment = f"test-{secrets.token_hex(6)}"
        overrides |= {"redis_addr": f"redis://{request.getfixturevalue('redis_addr')}", "deployment": deployment}
        request.addfinalizer(lambda: delete_redis_keys(overrides["redis_addr"], deployment))
    server = await serve(ASYNC, **overrides)
    ids = []
    for _ in range(4):
        response = await server.client.post("/slow", json={})
        assert response.status == 202
        ids.append((await response.json())["execution_id"])
    queue = server.client.app[QUEUE].queue
    stolen: list[Any] = []
    for _ in range(8):
        stolen += await queue.claim("other-replica", 10, 30)
        await asyncio.sleep(0.1)
    assert stolen == []
    for execution_id in ids:
        await until(lambda execution_id=execution_id: equals_async(status_of(server, execution_id), "success"))
    text = await (await server.client.get("/metrics")).text()
    assert metric_value(text, "queue_jobs_total", outcome="done") == 4


def delete_redis_keys(url: str, deployment: str) -> None:
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=deployment_prefix(deployment).replace("{", "\\{").replace("}", "\\}") + "*"))
        if keys:
            client.delete(*keys)
