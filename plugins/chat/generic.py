"""Signed generic webhooks (GitHub's format by default): HMAC-SHA256 of the raw body in a configured header."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from server import (
    ChatService,
    Refused,
    Register,
    body_digest,
    chat_endpoint,
    fresh_timestamp,
    hmac_hex,
    hookimpl,
    json_body,
    same_signature,
)

PLATFORM = "generic"


async def deliveries(request: web.Request, chat: ChatService, settings: Mapping[str, Any]) -> web.StreamResponse:
    """`POST /webhooks/generic/{name}`: a signed JSON object, de-duplicated on the delivery id (or the body)."""
    name = request.match_info["name"]
    config = settings.get(name)
    if config is None:
        raise Refused(404, f"no generic webhook {name!r} is configured")
    given = request.headers.get(config["header"], "")
    if not given:
        raise Refused.unauthorized(f"missing {config['header']}")
    body = await request.read()
    if not same_signature(given, config["prefix"] + hmac_hex(config["secret"], body)):
        raise Refused.unauthorized(f"bad signature in {config['header']}")
    if config["timestamp_header"] and not fresh_timestamp(
        request.headers.get(config["timestamp_header"], ""), config["window"]
    ):
        raise Refused.unauthorized(f"missing or stale {config['timestamp_header']}")
    payload = json_body(request, body)
    if not isinstance(payload, dict):
        raise Refused.invalid("the body must be a JSON object")
    # Without a delivery id, an identical body is the same delivery sent again.
    delivery = request.headers.get(config["delivery_header"], "") if config["delivery_header"] else ""
    event_id = delivery or body_digest(body)
    sender = payload.get("sender")
    message = {
        "platform": PLATFORM,
        "channel": name,
        "user": str((sender.get("login") or sender.get("id") or "") if isinstance(sender, dict) else ""),
        "text": str(payload.get("text") or payload.get("message") or ""),
        "event_id": event_id,
        "thread": "",
        "raw": payload,
        "event": request.headers.get(config["event_header"], "") if config["event_header"] else "",
        "name": name,
    }
    await chat.accept(message, dedupe_key=f"generic:{name}:{event_id}")
    return web.Response()


@hookimpl
def register_webhooks(register: Register) -> None:
    """The generic signed webhook endpoint."""
    register("POST", "/webhooks/generic/{name}", chat_endpoint(PLATFORM, deliveries))
