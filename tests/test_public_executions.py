"""`GET /executions/{id}` on the main listener: every recorded execution, status and result or error only."""

from __future__ import annotations

from typing import Any

import pytest

from server.keys import RECORDER
from tests.conftest import ADMIN, SECRET, Server, until

CONFIG = """
pipelines:
  order:
    trigger: {type: http, config: {path: /orders, method: POST}}
    steps:
      - {name: check, type: step.validate, config: {strategy: required_fields, required_fields: [sku]}}
      - {name: secret, type: step.set, config: {values: {internal: "step output {{ .sku }}"}}}
      - {name: answer, type: step.json_response, config: {status: 201, body: {sku: "{{ .sku }}"}}}
  plain:
    trigger: {type: http, config: {path: /plain, method: GET}}
    steps:
      - {name: set, type: step.set, config: {values: {n: 1}}}
  broken:
    trigger: {type: http, config: {path: /broken, method: POST}}
    steps:
      - {name: bad, type: test.boom}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def store_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides for the embedded SQLite store, or for PostgreSQL in a fresh schema."""
    if request.param == "sqlite":
        return {}
    return {"db": request.getfixturevalue("database")}


async def execution(server: Server, execution_id: str) -> tuple[int, Any]:
    response = await server.client.get(f"/executions/{execution_id}")
    return response.status, await response.json()


async def written(server: Server) -> bool:
    return server.client.app[RECORDER].pending == 0


async def test_a_normal_requests_execution_id_resolves_at_once_and_from_the_store(serve, store_overrides) -> None:
    server = await serve(CONFIG, **store_overrides)
    response = await server.client.post("/orders", json={"sku": "mug", "card": "4111-1111"})
    assert response.status == 201
    execution_id = response.headers["X-Execution-ID"]
    expected = {"id": execution_id, "pipeline": "order", "status": "success", "result": {"sku": "mug"}}
    # At once: the execution still waits in the recorder's buffer (written behind).
    assert await execution(server, execution_id) == (200, expected)
    await until(lambda: written(server))
    assert await server.store.get_execution(execution_id) is not None
    # From the store: the same body; never the payload ("card") nor a step's output ("internal").
    assert await execution(server, execution_id) == (200, expected)


async def test_failures_answer_their_error_and_no_result(serve, store_overrides) -> None:
    server = await serve(CONFIG, **store_overrides)
    invalid = await server.client.post("/orders", json={"card": "4111-1111"})
    broken = await server.client.post("/broken", json={"card": "4111-1111"})
    assert (invalid.status, broken.status) == (400, 500)
    invalid_id, broken_id = invalid.headers["X-Execution-ID"], broken.headers["X-Execution-ID"]
    for _ in range(2):  # from the buffer, then from the store
        assert await execution(server, invalid_id) == (
            200,
            {
                "id": invalid_id,
                "pipeline": "order",
                "status": "error",
                "error": {
                    "error": "missing required field(s): sku",
                    "fields": ["sku"],
                    "step": "check",
                    "execution_id": invalid_id,
                },
            },
        )
        status, body = await execution(server, broken_id)
        assert (status, body["status"], sorted(body)) == (200, "error", ["error", "id", "pipeline", "status"])
        assert body["error"]["step"] == "bad" and "secret-internal-detail" not in str(body)
        await until(lambda: written(server))


async def test_a_pipeline_without_a_response_step_answers_what_its_caller_saw(serve, store_overrides) -> None:
    server = await serve(CONFIG, **store_overrides)
    response = await server.client.get("/plain?x=1")
    seen = await response.json()
    await until(lambda: written(server))
    status, body = await execution(server, response.headers["X-Execution-ID"])
    assert (status, body["status"], body["result"]) == (200, "success", seen)


async def test_without_recording_a_normal_execution_is_unknown(serve) -> None:
    server = await serve(CONFIG, record_executions=False)
    response = await server.client.post("/orders", json={"sku": "mug"})
    status, body = await execution(server, response.headers["X-Execution-ID"])
    assert status == 404 and body["error"].startswith("no execution ")


async def test_a_nul_character_in_an_id_or_a_filter_is_a_clear_4xx_on_every_store(serve, store_overrides) -> None:
    server = await serve(CONFIG, jwt_secret=SECRET, **store_overrides)
    assert await execution(server, "a%00b") == (
        404,
        {"error": "no execution 'a\\x00b' (unknown, or expired from history)"},
    )
    detail = await server.admin.get("/api/executions/a%00b", headers=ADMIN)
    assert detail.status == 404
    listing = await server.admin.get("/api/executions?error=a%00", headers=ADMIN)
    assert (listing.status, await listing.json()) == (400, {"error": "'error' holds a NUL character", "field": "error"})
    audit = await server.admin.get("/api/audit?actor=%00", headers=ADMIN)
    assert audit.status == 400
