"""Slack: the Events API, slash commands and interactivity endpoints, and replies through the Web API."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

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
    fresh_timestamp,
    hmac_hex,
    hookimpl,
    json_body,
    same_signature,
)

PLATFORM = "slack"
WINDOW = 300  # seconds: Slack's own replay window for the request timestamp
AUTH_TEST_TIMEOUT = 1.0
log = logging.getLogger("workflow.chat.slack")
_bot_users: dict[str, str] = {}  # "api_base token" -> the bot's user id (auth.test), "" when it could not be found


async def verified(request: web.Request, settings: Mapping[str, Any]) -> bytes:
    """The raw body, once its v0 signature and timestamp are good; else 401."""
    signature = request.headers.get("X-Slack-Signature", "")
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    if not signature or not timestamp:
        raise Refused.unauthorized("missing X-Slack-Signature or X-Slack-Request-Timestamp")
    body = await request.read()
    expected = "v0=" + hmac_hex(settings["signing_secret"], b"v0:" + timestamp.encode() + b":" + body)
    if not same_signature(signature, expected):
        raise Refused.unauthorized("bad Slack signature")
    if not fresh_timestamp(timestamp, WINDOW):
        raise Refused.unauthorized("stale Slack request timestamp (more than 5 minutes off)")
    return body


def form(body: bytes) -> dict[str, str]:
    """A form-encoded body as a dict; 400 when it is not one."""
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body)))
    except (UnicodeDecodeError, ValueError):
        raise Refused.invalid("the body is not form-encoded") from None


async def events(request: web.Request, chat: ChatService, settings: Mapping[str, Any]) -> web.StreamResponse:
    """`POST /webhooks/slack/events`: url_verification, or an event_callback stored and acknowledged at once."""
    envelope = json_body(request, await verified(request, settings))
    try:
        kind = envelope["type"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        raise Refused.invalid("the body is not a Slack Events API JSON envelope") from None
    if kind == "url_verification":
        return web.json_response({"challenge": envelope.get("challenge", "")})
    event = envelope.get("event")
    if kind != "event_callback" or not isinstance(event, dict) or not isinstance(envelope.get("event_id"), str):
        if kind == "event_callback":
            raise Refused.invalid("an event_callback needs 'event' and 'event_id'")
        chat.count(PLATFORM, "ignored")  # app_rate_limited and future envelope types: nothing to run
        return web.Response()
    if event.get("bot_id") or (event.get("user") and event.get("user") == await bot_user(chat, settings)):
        chat.count(PLATFORM, "ignored")  # the bot's own message: a reply must never start a pipeline (a loop)
        return web.Response()
    message = {
        "platform": PLATFORM,
        "channel": str(event.get("channel") or ""),
        "user": str(event.get("user") or ""),
        "text": str(event.get("text") or ""),
        "event_id": envelope["event_id"],
        "thread": str(event.get("thread_ts") or event.get("ts") or ""),
        "raw": envelope,
        "event": str(event.get("type") or ""),
        "subtype": str(event.get("subtype") or ""),
        "name": str(envelope.get("team_id") or ""),
    }
    await chat.accept(message, dedupe_key=f"slack:{message['name']}:{message['event_id']}")
    return web.Response()


async def commands(request: web.Request, chat: ChatService, settings: Mapping[str, Any]) -> web.StreamResponse:
    """`POST /webhooks/slack/commands`: the pipeline's reply if ready within the budget, else an ack."""
    fields = form(await verified(request, settings))
    if not fields.get("command") or not fields.get("trigger_id"):
        raise Refused.invalid("a slash command needs 'command' and 'trigger_id'")
    message = {
        "platform": PLATFORM,
        "channel": fields.get("channel_id", ""),
        "user": fields.get("user_id", ""),
        "text": fields.get("text", ""),
        "event_id": fields["trigger_id"],
        "thread": "",
        "raw": fields,
        "event": "slash_command",
        "command": fields["command"],
        "name": fields.get("team_id", ""),
    }
    key = f"slack:{message['name']}:{message['event_id']}"
    accepted = await chat.accept(message, dedupe_key=key, reply_within=float(settings["reply_budget"]))
    if accepted.reply is None:
        return web.Response()  # Slack shows nothing; the reply follows through response_url
    return web.json_response(slack_body(accepted.reply))


async def interactions(request: web.Request, chat: ChatService, settings: Mapping[str, Any]) -> web.StreamResponse:
    """`POST /webhooks/slack/interactions`: acknowledged at once; replies go to the payload's response_url."""
    fields = form(await verified(request, settings))
    if not isinstance(fields.get("payload"), str):
        raise Refused.invalid("an interaction needs a JSON 'payload' field with a 'type'")
    payload = json_body(request, fields["payload"])
    try:
        kind = str(payload["type"])
    except (ValueError, TypeError, KeyError):
        raise Refused.invalid("an interaction needs a JSON 'payload' field with a 'type'") from None
    actions = payload.get("actions") or [{}]
    event_id = payload.get("trigger_id") or (actions[0].get("action_ts") if isinstance(actions[0], dict) else None)
    if not isinstance(event_id, str):
        raise Refused.invalid("an interaction needs a 'trigger_id' or an action's 'action_ts'")
    first = actions[0] if isinstance(actions[0], dict) else {}
    message = {
        "platform": PLATFORM,
        "channel": str((payload.get("channel") or {}).get("id") or ""),
        "user": str((payload.get("user") or {}).get("id") or ""),
        "text": str(first.get("value") or first.get("action_id") or ""),
        "event_id": event_id,
        "thread": str((payload.get("message") or {}).get("ts") or ""),
        "raw": payload,
        "event": kind,
        "name": str((payload.get("team") or {}).get("id") or ""),
    }
    await chat.accept(message, dedupe_key=f"slack:{message['name']}:{event_id}")
    return web.Response()


async def bot_user(chat: ChatService, settings: Mapping[str, Any]) -> str:
    """The bot's own user id from `auth.test`, asked once per token (bounded: it is on the ack path)."""
    token = str(settings.get("bot_token") or "")
    if not token:
        return ""
    key = f"{settings['api_base']} {token}"
    if key not in _bot_users:
        _bot_users[key] = ""
        try:
            async with chat.http.post(
                f"{settings['api_base']}/auth.test",
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=AUTH_TEST_TIMEOUT),
            ) as response:
                answer = await response.json(content_type=None)
            _bot_users[key] = str(answer.get("user_id") or "") if answer.get("ok") else ""
            if not _bot_users[key]:
                log.warning(
                    "slack auth.test failed (%s): only bot_id marks the bot's own messages", answer.get("error")
                )
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
            log.warning("slack auth.test failed (%s): only bot_id marks the bot's own messages", exc)
    return _bot_users[key]


def slack_body(reply: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack message body for `reply`."""
    body: dict[str, Any] = {"text": reply.get("text", "")}
    if reply.get("blocks"):
        blocks = reply["blocks"]
        body["blocks"] = json.loads(blocks) if isinstance(blocks, str) else blocks
    return body


async def send(
    http: aiohttp.ClientSession, settings: Mapping[str, Any], message: Mapping[str, Any], reply: Mapping[str, Any]
) -> Mapping[str, Any]:
    """Reply through the command's response_url when there is one, else `chat.postMessage` with the bot token."""
    body = slack_body(reply)
    response_url = (message.get("raw") or {}).get("response_url")
    if response_url:
        status, answer = await chat_post(http, PLATFORM, str(response_url), json=body)
        if status >= 400:
            raise StepError(f"slack: response_url answered {status}: {answer}", status=502)
        return {"via": "response_url"}
    if not settings.get("bot_token"):
        raise StepError("slack: chat.postMessage needs chat.slack.bot_token", status=502)
    body["channel"] = message.get("channel")
    if reply.get("thread") and message.get("thread"):
        body["thread_ts"] = message["thread"]
    status, answer = await chat_post(
        http,
        PLATFORM,
        f"{settings['api_base']}/chat.postMessage",
        json=body,
        headers={"Authorization": f"Bearer {settings['bot_token']}"},
    )
    if status >= 400 or not isinstance(answer, Mapping) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, Mapping) else f"HTTP {status}"
        raise StepError(f"slack: chat.postMessage failed: {error}", status=502, platform_error=error)
    return {"ts": answer.get("ts"), "channel": answer.get("channel")}


@hookimpl
def register_webhooks(register: Register) -> None:
    """The three Slack endpoints."""
    register("POST", "/webhooks/slack/events", chat_endpoint(PLATFORM, events))
    register("POST", "/webhooks/slack/commands", chat_endpoint(PLATFORM, commands))
    register("POST", "/webhooks/slack/interactions", chat_endpoint(PLATFORM, interactions))


@hookimpl
def startup(services: Services, logger: logging.Logger) -> None:
    """`step.chat_reply` answers on Slack through `send`."""
    if services.chat is not None:
        services.chat.register_replier(PLATFORM, send)
    _bot_users.clear()
