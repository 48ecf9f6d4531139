"""Twilio messaging (SMS and WhatsApp): the signed webhook answered with TwiML, and the Messages API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

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
    same_signature,
)

PLATFORM = "twilio"
XML = "application/xml"
EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 over the URL and each parameter name and value, sorted."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


async def sms(request: web.Request, chat: ChatService, settings: Mapping[str, Any]) -> web.StreamResponse:
    """`POST /webhooks/twilio/sms`: TwiML with the pipeline's `<Message>` if ready within the budget."""
    given = request.headers.get("X-Twilio-Signature", "")
    if not given:
        raise Refused.unauthorized("missing X-Twilio-Signature")
    body = await request.read()
    try:
        params = parse_qsl(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        params = None
    # Twilio signs the public URL it called, which a proxy in front of us may have rewritten: use the configured one.
    url = str(settings["public_url"]).rstrip("/") + request.path_qs
    if params is None or not same_signature(given, signature(settings["auth_token"], url, params)):
        raise Refused.unauthorized("bad Twilio signature")
    fields = dict(params)
    if not fields.get("MessageSid") or not fields.get("From"):
        raise Refused.invalid("a Twilio message needs 'MessageSid' and 'From'")
    message = {
        "platform": PLATFORM,
        "channel": fields.get("To", ""),
        "user": fields["From"],  # `whatsapp:+…` for WhatsApp senders, kept as is so the reply goes back there
        "text": fields.get("Body", ""),
        "event_id": fields["MessageSid"],
        "thread": "",
        "raw": fields,
        "event": "message",
        "name": fields.get("AccountSid", ""),
    }
    key = f"twilio:{message['name']}:{message['event_id']}"
    accepted = await chat.accept(message, dedupe_key=key, reply_within=float(settings["reply_budget"]))
    if accepted.reply is None:
        return web.Response(text=EMPTY, content_type=XML)
    text = escape(str(accepted.reply.get("text", "")))
    twiml = f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{text}</Message></Response>'
    return web.Response(text=twiml, content_type=XML)


async def send(
    http: aiohttp.ClientSession, settings: Mapping[str, Any], message: Mapping[str, Any], reply: Mapping[str, Any]
) -> Mapping[str, Any]:
    """Send through the Messages API, from the number the message was sent to."""
    sid = settings.get("account_sid")
    if not sid:
        raise StepError("twilio: the Messages API needs chat.twilio.account_sid", status=502)
    sender = message.get("channel") or ""
    if not sender:
        raise StepError("twilio: no sender number for the reply (set the step's 'channel'?)", status=502)
    status, answer = await chat_post(
        http,
        PLATFORM,
        f"{settings['api_base']}/2010-04-01/Accounts/{sid}/Messages.json",
        data={"From": sender, "To": message.get("user") or "", "Body": reply.get("text", "")},
        headers={"Authorization": "Basic " + base64.b64encode(f"{sid}:{settings['auth_token']}".encode()).decode()},
    )
    if status >= 400 or not isinstance(answer, Mapping):
        error = answer.get("message") if isinstance(answer, Mapping) else answer
        code = answer.get("code") if isinstance(answer, Mapping) else None
        raise StepError(f"twilio: Messages API answered {status}: {error}", status=502, platform_error=code)
    return {"sid": answer.get("sid")}


@hookimpl
def register_webhooks(register: Register) -> None:
    """The Twilio messaging endpoint."""
    register("POST", "/webhooks/twilio/sms", chat_endpoint(PLATFORM, sms))


@hookimpl
def startup(services: Services, logger: logging.Logger) -> None:
    """`step.chat_reply` answers on Twilio through `send`."""
    if services.chat is not None:
        services.chat.register_replier(PLATFORM, send)
