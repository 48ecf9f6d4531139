"""The two middlewares: request ids, metrics and one log line; errors to JSON, in one place."""

from __future__ import annotations

import json
import logging
import time
import uuid

from aiohttp import web

from . import logs
from .errors import MethodNotAllowed, PayloadTooLarge, WorkflowError
from .keys import METRICS, SETTINGS
from .metrics import route_label

log = logging.getLogger("workflow.http")
REQUEST_ID_HEADER = "X-Request-ID"


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response (a step may choose another JSON type, such as application/problem+json)."""
    payload = json.dumps(body, default=str, separators=(",", ":")).encode()
    if headers and any(k.lower() == "content-type" for k in headers):
        return web.Response(body=payload, status=status, headers=headers)
    return web.Response(body=payload, status=status, content_type="application/json", headers=headers)


def error_response(error: WorkflowError) -> web.Response:
    """The JSON answer for a domain error."""
    headers = {"Allow": ", ".join(error.allowed)} if isinstance(error, MethodNotAllowed) else None
    return json_response(error.to_json(), error.status, headers)


@web.middleware
async def observe_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Give the request an id, time it, count it, and log one line when it is answered."""
    rid = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    token = logs.request_id.set(rid[:128])
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = rid[:128]
        return response
    finally:
        elapsed = time.perf_counter() - start
        label = route_label(request)
        request.app[METRICS].observe_request(request.method, label, status, elapsed)
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s %d", request.method, request.path, status,
                     extra={"status": status, "route": label, "duration_ms": round(elapsed * 1000, 3),
                            "remote": request.remote})
        logs.request_id.reset(token)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Turn every error into a JSON body with a fitting status; never a traceback."""
    try:
        return await handler(request)
    except WorkflowError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        return error_response(PayloadTooLarge(f"request body is larger than the limit of {limit} bytes",
                                              limit=limit))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = WorkflowError(exc.reason, status=exc.status)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            error = MethodNotAllowed(f"method {exc.method} is not allowed", sorted(exc.allowed_methods))
        return error_response(error)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response({"error": "internal server error", "request_id": logs.request_id.get()}, 500)
