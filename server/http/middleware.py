"""The one middleware: request ids, timing, metrics and one log line, and errors turned into JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from .. import logs
from ..engine.ids import new_id
from ..errors import MethodNotAllowed, PayloadTooLarge, WorkflowError
from ..keys import METRICS, ROUTE_LABEL, SETTINGS

log = logging.getLogger(logs.ACCESS_LOGGER)  # also the access log: its level turns it on and off
REQUEST_ID_HEADER = "X-Request-ID"


def _encoder() -> Callable[[object], str]:
    """Compact JSON, non-ASCII kept, odd values as str(): JSONEncoder(...).encode without its per-call set-up."""
    # JSONEncoder.encode builds a new C encoder on every call, which costs as much as encoding a small
    # body: build it once. Its circular-reference markers are shared, so they are cleared after a failure.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode
    markers: dict[int, object] = {}
    encode = make(markers, str, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def run(value: object) -> str:
        try:
            return "".join(encode(value, 0))
        except BaseException:
            markers.clear()
            raise

    return run


_encode = _encoder()
_JSON_HEADERS = {"Content-Type": "application/json"}


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response (a step may choose another JSON type, such as application/problem+json)."""
    if not headers:
        headers = _JSON_HEADERS  # aiohttp copies the mapping into the response's own headers
    else:
        for key in headers:
            if key.lower() == "content-type":
                break
        else:
            headers = {**headers, "Content-Type": "application/json"}
    return web.Response(body=_encode(body).encode(), status=status, headers=headers)


def error_response(error: WorkflowError, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON answer for a domain error."""
    if error.headers:
        headers = {**(headers or {}), **error.headers}
    return json_response(error.to_json(), error.status, headers)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id, answer errors as JSON, count and time it, and log one line."""
    rid = request.headers.get(REQUEST_ID_HEADER)
    rid = rid[:128] if rid else new_id()
    token = logs.request_id.set(rid)
    start = time.perf_counter()
    try:
        try:
            response = await handler(request)
        except Exception as exc:  # this is the one place errors become answers
            response = _error_answer(request, exc)
        response.headers[REQUEST_ID_HEADER] = rid
        elapsed = time.perf_counter() - start
        label = route_label(request)
        request.app[METRICS].observe_request(request.method, label, response.status, elapsed)
        if request.app[SETTINGS].access_log and log.isEnabledFor(logging.INFO):
            logs.access(request.method, request.path, response.status, label, elapsed, request.remote, rid)
        return response
    finally:
        logs.request_id.reset(token)


def _error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """Turn any exception into a JSON body with a fitting status; never a traceback."""
    if isinstance(exc, WorkflowError):
        return error_response(exc)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[SETTINGS].max_body_bytes
        return error_response(PayloadTooLarge(f"request body is larger than the limit of {limit} bytes", limit=limit))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return error_response(MethodNotAllowed(f"method {exc.method} is not allowed", sorted(exc.allowed_methods)))
    fault = client_fault(exc)
    if fault is not None:  # a body aiohttp cannot decode (bad gzip, a broken chunk)
        answer = error_response(WorkflowError(f"the request body cannot be read: {_reason(fault)}", status=fault.code))
        answer.force_close()  # the rest of the body cannot be told from the next request
        return answer
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:  # redirects and the like are answers, not errors
            return exc
        return error_response(WorkflowError(exc.reason, status=exc.status))
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return json_response({"error": "internal server error", "request_id": logs.request_id.get()}, 500)


class ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's request-handler logger: a request its HTTP parser refuses is one line, never a traceback.

    aiohttp answers those (URL or header too long, too many headers, a NUL in a header) itself, before any
    middleware runs; anything else it logs keeps its traceback.
    """

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        """Log a refused request as one warning; any other error as aiohttp would."""
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        fault = client_fault(exc)
        if fault is not None:
            self.logger.warning("refused a malformed request (%d): %s", fault.code, _reason(fault))
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def client_fault(exc: BaseException | None) -> HttpProcessingError | None:
    """The client's HTTP mistake behind `exc` (aiohttp wraps a body's in RequestPayloadError), if it is one."""
    for _ in range(3):  # the error itself, or what it was raised from
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            return exc
        exc = exc.__cause__ if exc is not None else None
    return None


def _reason(fault: HttpProcessingError) -> str:
    return " ".join(str(fault.message).split())[:300]


# aiohttp's own logger name, so its other records still read as aiohttp's.
PROTOCOL_LOG = ProtocolLog(logging.getLogger("aiohttp.server"))

# The `path` label of requests no route matched (a scan of random URLs must not grow the label set).
UNMATCHED = "unmatched"


def route_label(request: web.Request) -> str:
    """The `path` label: the matched route template, never the raw URL."""
    label: str | None = request.get(ROUTE_LABEL)
    if label is not None:
        return label
    info = request.match_info
    route = info.route if info is not None else None
    if route is None or info.http_exception is not None or route.resource is None:
        return UNMATCHED
    canonical = route.resource.canonical
    return UNMATCHED if "{tail" in canonical else canonical
