"""Discord interactions as a hot-reloaded chat platform: Ed25519 signatures, PING/PONG and deferred replies.

Config: `chat: {discord: {public_key: "${DISCORD_PUBLIC_KEY:-}", api_base: "https://discord.com/api/v10"}}`;
an empty `public_key` turns the endpoint off (404). Set the application's *Interactions Endpoint URL* to
`https://…/webhooks/discord/interactions`. Slash commands start `{type: chat, config: {platform: discord}}`.
"""

import json

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server import Refused, StepError, chat_endpoint, chat_post, fresh_timestamp, hookimpl

PLATFORM = "discord"
API_BASE = "https://discord.com/api/v10"
PING, APPLICATION_COMMAND = 1, 2
PONG, DEFERRED_CHANNEL_MESSAGE = 1, 5
WINDOW = 300  # seconds: the signed timestamp must be recent (replay protection)
_chat = []  # the chat service this version registered its reply function with (for shutdown)


async def interactions(request, chat, settings):
    """`POST /webhooks/discord/interactions`: PING answered with PONG; a command acknowledged, replied later."""
    public_key = settings.get("public_key") or ""
    if not public_key:
        raise Refused(404, "the discord platform is not configured (no chat.discord.public_key)")
    signature = request.headers.get("X-Signature-Ed25519", "")
    timestamp = request.headers.get("X-Signature-Timestamp", "")
    if not signature or not timestamp:
        raise Refused.unauthorized("missing X-Signature-Ed25519 or X-Signature-Timestamp")
    body = await request.read()
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(
            bytes.fromhex(signature), timestamp.encode() + body
        )
    except (ValueError, InvalidSignature):
        raise Refused.unauthorized("bad Discord signature") from None
    if not fresh_timestamp(timestamp, WINDOW):
        raise Refused.unauthorized("stale X-Signature-Timestamp")
    try:
        interaction = json.loads(body)
        kind = interaction["type"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        raise Refused.invalid("the body is not a Discord interaction") from None
    if kind == PING:
        return web.json_response({"type": PONG})
    if kind != APPLICATION_COMMAND or not interaction.get("id") or not interaction.get("token"):
        chat.count(PLATFORM, "ignored")
        return web.json_response({"type": DEFERRED_CHANNEL_MESSAGE})
    data = interaction.get("data") or {}
    user = (interaction.get("member") or {}).get("user") or interaction.get("user") or {}
    options = " ".join(str(o.get("value")) for o in data.get("options") or [] if isinstance(o, dict))
    message = {
        "platform": PLATFORM,
        "channel": str(interaction.get("channel_id") or ""),
        "user": str(user.get("id") or ""),
        "text": options,
        "event_id": str(interaction["id"]),
        "thread": "",
        "raw": interaction,
        "event": "application_command",
        "command": str(data.get("name") or ""),
        "name": str(interaction.get("application_id") or ""),
    }
    await chat.accept(message, dedupe_key=f"discord:{message['name']}:{message['event_id']}")
    return web.json_response({"type": DEFERRED_CHANNEL_MESSAGE})  # "thinking…" until the follow-up arrives


async def send(http, settings, message, reply):
    """Edit the deferred answer through the interaction's webhook (valid 15 minutes)."""
    raw = message.get("raw") or {}
    if not raw.get("application_id") or not raw.get("token"):
        raise StepError("discord: a reply needs the interaction it answers", status=502)
    base = str(settings.get("api_base") or API_BASE).rstrip("/")
    url = f"{base}/webhooks/{raw['application_id']}/{raw['token']}"
    status, answer = await chat_post(http, PLATFORM, url, json={"content": reply.get("text", "")})
    if status >= 400:
        error = answer.get("message") if isinstance(answer, dict) else answer
        raise StepError(f"discord: the interaction webhook answered {status}: {error}", status=502)
    return {"id": answer.get("id") if isinstance(answer, dict) else None}


@hookimpl
def register_webhooks(register):
    register("POST", "/webhooks/discord/interactions", chat_endpoint(PLATFORM, interactions))


@hookimpl
def startup(services, logger):
    """`step.chat_reply` answers on Discord through this version's `send`."""
    if services.chat is not None:
        services.chat.register_replier(PLATFORM, send)
        _chat[:] = [services.chat]


@hookimpl
def shutdown(logger):
    """Leaving service: unregister `send`, unless a newer version has already replaced it."""
    for chat in _chat:
        chat.unregister_replier(PLATFORM, send)
