"""A local fake of the Slack, Twilio and Telegram APIs that records calls and answers 429 and 500 on request."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from twilio.request_validator import RequestValidator

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TWILIO_TOKEN = "12345678901234567890123456789012"
TWILIO_SID = "AC00000000000000000000000000000000"
TELEGRAM_SECRET = "tg-secret-token_1"
TELEGRAM_TOKEN = "123:ABC"
GITHUB_SECRET = "It's a Secret to Everybody"
PUBLIC_URL = "https://bot.example.com"


@dataclass
class Call:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApi:
    """What the fake received, and the scripted answers still to give (path -> [(status, body, headers)])."""

    calls: list[Call] = field(default_factory=list)
    script: dict[str, list[tuple[int, Any, dict[str, str]]]] = field(default_factory=dict)
    url: str = ""

    def to(self, suffix: str) -> list[Call]:
        """The calls whose path ends with `suffix`."""
        return [c for c in self.calls if c.path.endswith(suffix)]


def default_answer(path: str, body: Any) -> tuple[int, Any]:
    """What each platform answers when nothing is scripted."""
    if path.endswith("/auth.test"):
        return 200, {"ok": True, "user_id": "UBOT"}
    if path.endswith("/chat.postMessage"):
        return 200, {"ok": True, "ts": "1700000000.000200", "channel": body.get("channel")}
    if path.endswith("/sendMessage"):
        return 200, {"ok": True, "result": {"message_id": 77}}
    if path.endswith("/Messages.json"):
        return 201, {"sid": "SM" + "f" * 32, "status": "queued"}
    return 200, "ok"


def fake_app(api: FakeApi) -> web.Application:
    """The fake's aiohttp app."""

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        if request.content_type == "application/json":
            body: Any = json.loads(raw)
        else:
            body = dict((await request.post()).items())
        api.calls.append(Call(request.path, dict(request.headers), body))
        scripted = api.script.get(request.path)
        if scripted:
            status, answer, headers = scripted.pop(0)
        else:
            (status, answer), headers = default_answer(request.path, body), {}
        if isinstance(answer, str):
            return web.Response(status=status, text=answer, headers=headers)
        return web.json_response(answer, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def slack_headers(body: str, timestamp: int, secret: str = SLACK_SECRET, **extra: str) -> dict[str, str]:
    """Headers signed by slack_sdk's own SignatureVerifier."""
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body)
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature, **extra}


def twilio_headers(path: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> dict[str, str]:
    """Headers signed by twilio's own RequestValidator over the public URL."""
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(PUBLIC_URL + path, params)}


def chat_config(api_url: str, pipelines: str, *, extra: Callable[[str], str] = lambda s: s) -> str:
    """A config with every platform pointed at the fake, plus `pipelines` (already indented by two)."""
    return extra(f"""
chat:
  slack: {{signing_secret: "{SLACK_SECRET}", bot_token: xoxb-test, api_base: "{api_url}/slack/api", reply_budget: 0.5}}
  twilio:
    auth_token: "{TWILIO_TOKEN}"
    account_sid: "{TWILIO_SID}"
    public_url: "{PUBLIC_URL}"
    api_base: "{api_url}/twilio"
    reply_budget: 0.5
  telegram:
    bots: {{support: {{token: "{TELEGRAM_TOKEN}", secret_token: "{TELEGRAM_SECRET}"}}}}
    api_base: "{api_url}/telegram"
  generic:
    github: {{secret: "{GITHUB_SECRET}"}}
pipelines:
{pipelines}""")
