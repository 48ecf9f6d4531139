"""The main listener's dynamic routes: pipeline triggers, webhook endpoints and async executions."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..engine.executor import Outcome
from ..errors import MethodNotAllowed, NotFound, ServiceUnavailable, clip
from ..keys import ENGINE, QUEUE, RECORDER, ROUTE_LABEL, STORE
from .bodies import read_payload
from .middleware import error_response, json_response


async def handle_trigger(request: web.Request) -> web.StreamResponse:
    """Dispatch a request to the pipeline whose HTTP trigger matches it, through the live config.

    HEAD runs the GET pipeline (aiohttp drops the body); OPTIONS answers the path's methods in `Allow`.
    """
    engine = request.app[ENGINE]
    if not engine.ready:
        raise ServiceUnavailable("the server is not ready")
    state = engine.state  # one snapshot for matching and running, leased while the body arrives
    method = request.method
    try:
        pipeline, template, params = state.config.router.match("GET" if method == "HEAD" else method, request.path)
    except MethodNotAllowed as exc:
        request[ROUTE_LABEL] = exc.route
        allowed = with_implied(exc.allowed)
        if method == "OPTIONS":
            return web.Response(status=204, headers={"Allow": ", ".join(allowed)})
        raise MethodNotAllowed(
            f"method {clip(method)} is not allowed for this path", allowed, route=exc.route
        ) from None
    request[ROUTE_LABEL] = template
    with state.lease:
        payload = await read_payload(request)
        payload["params"] = params
        payload["query"] = dict(request.query) if request.query_string else {}
        if pipeline.trigger.is_async:
            execution_id = await engine.submit(pipeline, payload)
            location = f"/executions/{execution_id}"
            return json_response(
                {"execution_id": execution_id, "status": "queued", "location": location}, 202, {"Location": location}
            )
        return outcome_response(await engine.run(pipeline, payload, state=state))


def refuse_other_methods(app: web.Application) -> None:
    """405 with `Allow` for other methods on the fixed routes, which the trigger catch-all would answer 404."""
    for resource in list(app.router.resources()):
        methods = sorted({route.method for route in resource} - {"*"})
        if methods and isinstance(resource, web.Resource) and "{tail" not in resource.canonical:
            resource.add_route("*", _refuse(methods))


def _refuse(allowed: list[str]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise MethodNotAllowed(f"method {clip(request.method)} is not allowed for this path", allowed)

    return refuse


def with_implied(methods: list[str]) -> list[str]:
    """A path's methods plus those the server answers for it: HEAD where GET is, and OPTIONS."""
    implied = {*methods, "OPTIONS"} | ({"HEAD"} if "GET" in methods else set())
    return sorted(implied)


async def handle_webhook(request: web.Request) -> web.StreamResponse:
    """Dispatch `/webhooks/...` to an endpoint registered by a plugin, through the live registry."""
    state = request.app[ENGINE].state
    handler, template, params = state.registry.webhooks.match(request.method, request.path)
    request[ROUTE_LABEL] = template
    request.match_info.update(params)
    with state.lease:  # a component's endpoint keeps its version in service until it answers
        response: web.StreamResponse = await handler(request)  # the registry keeps handlers untyped
        return response


async def handle_execution(request: web.Request) -> web.Response:
    """`GET /executions/{id}` from any replica, for every recorded execution: status, result and error only.

    This listener is public, so never the payload or step outputs (CONTRACT §6). This replica's queued record
    first; then the queue, since a job still stored has not finished (the store may hold an earlier failed
    attempt); then the recorder's buffer (written behind, not in the store yet); then the store; else 404.
    """
    execution_id = request.match_info["id"]
    if "\x00" in execution_id:  # no id holds one, and PostgreSQL cannot even be asked
        raise NotFound(f"no execution {clip(execution_id)!r} (unknown, or expired from history)")
    record = request.app[ENGINE].executions.get(execution_id)
    if record is not None:
        return json_response(record.to_json())
    queued = await request.app[QUEUE].queue.status(execution_id)
    if queued is not None and queued[0] != "dead":
        return json_response({"id": execution_id, "status": queued[0]})
    if queued is not None:
        return json_response({"id": execution_id, "status": "dead", "error": {"error": queued[1]}})
    pending = request.app[RECORDER].find(execution_id)
    if pending is not None:
        error, result = json.loads(pending.error or "null"), json.loads(pending.result or "null")
        return json_response(_finished(pending.id, pending.pipeline, pending.status, error, result))
    row = await request.app[STORE].get_execution(execution_id)
    if row is not None:
        return json_response(_finished(row.id, row.pipeline, row.status, row.error, row.result))
    raise NotFound(f"no execution {clip(execution_id)!r} (unknown, or expired from history)")


def _finished(execution_id: str, pipeline: str, status: str, error: Any, result: Any) -> dict[str, Any]:
    """The public body of a finished execution: its result, or its error."""
    body: dict[str, Any] = {"id": execution_id, "pipeline": pipeline, "status": status}
    body.update({"error": error} if error is not None else {"result": result})
    return body


def outcome_response(outcome: Outcome) -> web.Response:
    """The HTTP answer for a finished execution."""
    headers = {"X-Execution-ID": outcome.execution_id}
    if outcome.error is not None:
        return error_response(outcome.error, headers)
    response = outcome.response
    if response is None:
        return json_response(outcome.data, 200, headers)
    if response.headers:
        headers.update(response.headers)
    return json_response(response.body, response.status, headers)
