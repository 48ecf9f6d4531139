"""Telegram: the bot webhook (secret-token header) and replies through `sendMessage`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from server import (
    ChatService,
    Refused,
    Register,
    Services,
    StepError,
    chat_endpoint,
    chat_post,
    hookimpl,
    json_body,
    same_signature,
)

PLATFORM = "telegram"
# The update fields that carry a message, and the subtype each one gets (filters ignore subtypes unless listed).
MESSAGE_FIELDS = {"message": "", "channel_post": "", "edited_message": "edited", "edited_channel_post": "edited"}


async def updates(request: web.Request, chat: ChatService, settings: Mapping[str, Any]) -> web.StreamResponse:
    """`POST /webhooks/telegram/{bot}`: one update, de-duplicated on `update_id`."""
    name = request.match_info["bot"]
    bot = settings["bots"].get(name)
    if bot is None:
        raise Refused(404, f"no Telegram bot {name!r} is configured")
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if not given or not same_signature(given, bot["secret_token"]):
        raise Refused.unauthorized("missing or bad X-Telegram-Bot-Api-Secret-Token")
    update = json_body(request, await request.read())
    try:
        update_id = update["update_id"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        raise Refused.invalid("the body is not a Telegram update with an 'update_id'") from None
    if not isinstance(update_id, int):
        raise Refused.invalid("'update_id' must be an integer")
    field = next((f for f in MESSAGE_FIELDS if isinstance(update.get(f), dict)), None)
    if field is None:  # callback queries, polls, member changes: nothing a chat trigger runs on
        chat.count(PLATFORM, "ignored")
        return web.Response()
    msg = update[field]
    sender = msg.get("from") or {}
    if sender.get("is_bot"):
        chat.count(PLATFORM, "ignored")
        return web.Response()
    message = {
        "platform": PLATFORM,
        "channel": str((msg.get("chat") or {}).get("id") or ""),
        "user": str(sender.get("id") or ""),
        "text": str(msg.get("text") or msg.get("caption") or ""),
        "event_id": str(update_id),
        "thread": str(msg.get("message_id") or ""),
        "raw": update,
        "event": field,
        "subtype": MESSAGE_FIELDS[field],
        "name": name,
    }
    await chat.accept(message, dedupe_key=f"telegram:{name}:{update_id}")
    return web.Response()


async def send(
    http: aiohttp.ClientSession, settings: Mapping[str, Any], message: Mapping[str, Any], reply: Mapping[str, Any]
) -> Mapping[str, Any]:
    """`sendMessage` with the bot that received the message; `reply_to_message_id` when `thread: true`."""
    bots = settings["bots"]
    name = message.get("name") or (next(iter(bots)) if len(bots) == 1 else "")
    if name not in bots:
        raise StepError(f"telegram: no bot {name!r} to reply with", status=502)
    body: dict[str, Any] = {"chat_id": message.get("channel"), "text": reply.get("text", "")}
    if reply.get("thread") and message.get("thread"):
        body["reply_to_message_id"] = int(message["thread"])
    status, answer = await chat_post(
        http, PLATFORM, f"{settings['api_base']}/bot{bots[name]['token']}/sendMessage", json=body
    )
    if status >= 400 or not isinstance(answer, Mapping) or not answer.get("ok"):
        error = answer.get("description") if isinstance(answer, Mapping) else f"HTTP {status}"
        raise StepError(f"telegram: sendMessage failed: {error}", status=502, platform_error=error)
    return {"message_id": (answer.get("result") or {}).get("message_id")}


@hookimpl
def register_webhooks(register: Register) -> None:
    """The Telegram bot endpoint."""
    register("POST", "/webhooks/telegram/{bot}", chat_endpoint(PLATFORM, updates))


@hookimpl
def startup(services: Services, logger: logging.Logger) -> None:
    """`step.chat_reply` answers on Telegram through `send`."""
    if services.chat is not None:
        services.chat.register_replier(PLATFORM, send)
