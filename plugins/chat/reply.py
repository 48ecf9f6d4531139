"""`step.chat_reply`: answer a chat message on its platform, inline when the webhook request still waits."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from server import (
    Register,
    StepContext,
    StepError,
    hookimpl,
)

OVERRIDES = ("platform", "channel")


def prepare_chat_reply(config: Mapping[str, Any]) -> None:
    """`text` (or Slack `blocks`) is required; `thread` is a boolean; `platform`/`channel` are strings."""
    if not isinstance(config.get("text"), str) and not config.get("blocks"):
        raise ValueError("step.chat_reply needs a 'text' (or Slack 'blocks')")
    if "thread" in config and not isinstance(config["thread"], bool) and "{{" not in str(config["thread"]):
        raise ValueError("thread must be true or false")
    for key in OVERRIDES:
        if key in config and not isinstance(config[key], str):
            raise ValueError(f"{key} must be a string")
    if "blocks" in config and not isinstance(config["blocks"], (list, str)):
        raise ValueError("blocks must be a list of Slack blocks")


async def chat_reply(ctx: StepContext) -> dict[str, Any]:
    """Send the reply; output `reply` with the platform, and `inline: true` when it went in the webhook answer."""
    services = ctx.services
    if services is None or services.chat is None:
        raise StepError(f"step {ctx.step!r}: the chat platforms are not started")
    chat, message = services.chat, dict(ctx.trigger)
    platform = str(ctx.config.get("platform") or message.get("platform") or "")
    reply = {
        "text": str(ctx.config.get("text") or ""),
        "thread": ctx.config.get("thread") in (True, "true"),
        "blocks": ctx.config.get("blocks"),
    }
    if "channel" in ctx.config:
        message["channel"] = str(ctx.config["channel"])
    elif platform == message.get("platform") and chat.offer_reply(message, reply):
        return {"reply": {"platform": platform, "inline": True}}
    if platform != message.get("platform"):  # a message on another platform: no thread or response URL there
        message = {"platform": platform, "channel": message.get("channel"), "name": "", "raw": {}}
    settings, replier = chat.settings(platform), chat.replier(platform)
    if settings is None or replier is None:
        raise StepError(f"step {ctx.step!r}: cannot reply on {platform or 'no platform'!r} (not configured)")
    started, status = time.perf_counter(), "error"
    try:
        result = await replier(services.http, settings, message, reply)
        status = "success"
    finally:
        chat.replied(platform, status, time.perf_counter() - started)
    return {"reply": {"platform": platform, "inline": False, **result}}


@hookimpl
def register_steps(register: Register) -> None:
    """The chat reply step."""
    register("step.chat_reply", chat_reply, prepare=prepare_chat_reply)
