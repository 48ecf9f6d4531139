"""`step.http_call`: call an HTTP service through the server's shared client session."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from server import Register, StepContext, StepError, hookimpl

from .services import services

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
DEFAULT_TIMEOUT = 10.0


def prepare_http_call(config: Mapping[str, Any]) -> None:
    """`url` is required; `method`, `timeout` and `fail_on_error` are checked when literal."""
    if not isinstance(config.get("url"), str) or not config["url"]:
        raise ValueError("step.http_call needs a 'url'")
    method = config.get("method", "GET")
    if "{{" not in str(method) and str(method).upper() not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    for key in ("headers", "query"):
        if key in config and not isinstance(config[key], dict):
            raise ValueError(f"{key} must be a mapping")
    timeout = config.get("timeout", DEFAULT_TIMEOUT)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")


async def http_call(ctx: StepContext) -> dict[str, Any]:
    """Send the request; output `status_code`, `headers` and `body` (parsed JSON when it is JSON).

    A status of 400 or more fails the step unless `fail_on_error: false`.
    """
    config = ctx.config
    method = str(config.get("method", "GET")).upper()
    options: dict[str, Any] = {
        "headers": {str(k): str(v) for k, v in (config.get("headers") or {}).items()},
        "params": {str(k): str(v) for k, v in (config.get("query") or {}).items()},
        "timeout": aiohttp.ClientTimeout(total=float(config.get("timeout", DEFAULT_TIMEOUT))),
    }
    if "body" in config:
        body = config["body"]
        if isinstance(body, (dict, list)):
            options["json"] = body
        else:
            options["data"] = str(body)
    try:
        async with services(ctx).http.request(method, config["url"], **options) as response:
            text = await response.text()
            result = {
                "status_code": response.status,
                "headers": dict(response.headers),
                "body": _parse(text, response.content_type),
            }
    except TimeoutError:
        raise StepError(f"{method} {config['url']} timed out", status=504) from None
    except aiohttp.ClientError as exc:
        raise StepError(f"{method} {config['url']} failed: {exc}", status=502) from None
    if response.status >= 400 and config.get("fail_on_error", True):
        raise StepError(
            f"{method} {config['url']} answered {response.status}", status=502, upstream_status=response.status
        )
    return result


def _parse(text: str, content_type: str) -> Any:
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


@hookimpl
def register_steps(register: Register) -> None:
    """The HTTP client step."""
    register("step.http_call", http_call, prepare=prepare_http_call)
