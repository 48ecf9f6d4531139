"""What a chat platform's endpoints share, built-in or a component's: refusals, the timed ack, signatures, replies."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from . import jsonbody
from .engine.chat import ChatService
from .errors import StepError
from .keys import ENGINE, SETTINGS

# handle(request, chat, settings): `settings` is the platform's block of the config in service.
ChatHandler = Callable[[web.Request, ChatService, Mapping[str, Any]], Awaitable[web.StreamResponse]]

REPLY_ATTEMPTS = 3
RETRY_AFTER_CAP = 2.0  # seconds: a longer Retry-After fails the reply instead of holding the step
BACKOFF = (0.2, 0.5)
REPLY_TIMEOUT = 5.0


class Refused(Exception):
    """A webhook request answered with `status` and `{"error": message}`, counted as `outcome` when it names one."""

    def __init__(self, status: int, message: str, outcome: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.outcome = status, message, outcome

    @classmethod
    def unauthorized(cls, message: str) -> Refused:
        """A bad, missing or stale signature: 401, counted as rejected."""
        return cls(401, message, "rejected")

    @classmethod
    def invalid(cls, message: str) -> Refused:
        """A malformed body: 400, counted as invalid."""
        return cls(400, message, "invalid")


def chat_endpoint(platform: str, handle: ChatHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An endpoint for `register_webhooks`: 404 unless `chat.<platform>` is configured, Refused as JSON, ack timed."""

    async def handler(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        chat = request.app[ENGINE].chat
        try:
            settings = chat.settings(platform)
            if settings is None:
                raise Refused(404, f"the {platform} platform is not configured (no chat.{platform} block or secret)")
            response = await handle(request, chat, settings)
        except Refused as exc:
            if exc.outcome:
                chat.count(platform, exc.outcome)
            response = web.json_response({"error": exc.message}, status=exc.status)
        chat.acknowledged(platform, time.perf_counter() - started)
        return response

    return handler


def json_body(request: web.Request, body: bytes | str) -> Any:
    """A webhook body as JSON within the server's limits (WORKFLOW_MAX_JSON_DEPTH, finite numbers): Refused 400 else."""
    try:
        return jsonbody.loads(body, request.app[SETTINGS].max_json_depth)
    except jsonbody.JSONBodyError as exc:
        raise Refused.invalid(f"the body: {exc}") from None


def hmac_hex(secret: str, data: bytes, digest: str = "sha256") -> str:
    """Hex HMAC of `data` under `secret`."""
    return hmac.new(secret.encode(), data, digest).hexdigest()


def same_signature(given: str, expected: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(given.encode(), expected.encode())


def fresh_timestamp(timestamp: str, window: float) -> bool:
    """Whether a Unix `timestamp` is within `window` seconds of now (replay protection)."""
    try:
        return abs(time.time() - int(timestamp)) <= window
    except ValueError:
        return False


async def chat_post(
    http: aiohttp.ClientSession, platform: str, url: str, **options: Any
) -> tuple[int, Mapping[str, Any] | str]:
    """POST to a platform API: a 429 retried after Retry-After, a 5xx with backoff, at most 3 attempts."""
    for attempt in range(REPLY_ATTEMPTS):
        try:
            async with http.post(url, timeout=aiohttp.ClientTimeout(total=REPLY_TIMEOUT), **options) as response:
                text = await response.text()
                body: Mapping[str, Any] | str = text
                if response.content_type == "application/json":
                    with contextlib.suppress(ValueError):
                        body = json.loads(text)
                if response.status == 429 or response.status >= 500:
                    wait = _retry_after(response.headers.get("Retry-After"), attempt)
                    if attempt + 1 < REPLY_ATTEMPTS and wait is not None:
                        await asyncio.sleep(wait)
                        continue
                return response.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            if attempt + 1 == REPLY_ATTEMPTS:
                raise StepError(f"{platform}: cannot reach {url}: {exc or type(exc).__name__}", status=502) from None
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
    raise AssertionError("unreachable: the last attempt returns or raises")


def _retry_after(header: str | None, attempt: int) -> float | None:
    """Seconds to wait before the next attempt; None when the platform asks for longer than we hold a step."""
    if header is not None:
        with contextlib.suppress(ValueError):
            seconds = float(header)
            return max(seconds, 0.0) if seconds <= RETRY_AFTER_CAP else None
    return BACKOFF[min(attempt, len(BACKOFF) - 1)]


def body_digest(body: bytes) -> str:
    """A delivery's identity when the platform sends no id: an identical body is the same delivery again."""
    return hashlib.sha256(body).hexdigest()
