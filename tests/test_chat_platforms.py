"""Twilio (TwiML, Messages API), Telegram and signed generic webhooks (GitHub's format), end to end."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.chat_fake import (
    GITHUB_SECRET,
    TELEGRAM_SECRET,
    TELEGRAM_TOKEN,
    TWILIO_SID,
    TWILIO_TOKEN,
    FakeApi,
    chat_config,
    twilio_headers,
)
from tests.conftest import metric_value, until
from tests.pipeline_plugin import CALLS

PIPELINES = """
  sms-fast:
    trigger: {type: chat, config: {platform: twilio, contains: status}}
    steps:
      - {name: reply, type: step.chat_reply, config: {text: "ok <{{ .text }}> & done"}}
  sms-slow:
    trigger: {type: chat, config: {platform: twilio, contains: report}}
    steps:
      - {name: wait, type: test.sleep, config: {seconds: 1}}
      - {name: reply, type: step.chat_reply, config: {text: "report ready"}}
  tg:
    trigger: {type: chat, config: {platform: telegram, name: support}}
    steps:
      - {name: seen, type: test.record}
      - {name: reply, type: step.chat_reply, config: {text: "hi {{ .user }}", thread: true}}
  tg-say:
    trigger: {type: http, config: {path: /tg-say, method: POST}}
    steps:
      - {name: reply, type: step.chat_reply, config: {platform: telegram, channel: "-5", text: "hello"}}
  gh:
    trigger: {type: chat, config: {platform: generic, name: github, event: push}}
    steps:
      - {name: seen, type: test.record}
"""
SMS_PATH = "/webhooks/twilio/sms"


@pytest.fixture
async def srv(serve, fake_api: FakeApi) -> Any:
    server = await serve(chat_config(fake_api.url, PIPELINES))
    await until(lambda: server.engine.ready)
    return server


def sms(sid: str, text: str, sender: str = "+15550001111") -> dict[str, str]:
    """The fields of a Twilio messaging webhook."""
    return {"MessageSid": sid, "AccountSid": TWILIO_SID, "From": sender, "To": "+15559998888", "Body": text}


async def post_sms(srv: Any, params: dict[str, str], path: str = SMS_PATH) -> tuple[int, str, str]:
    response = await srv.client.post(
        path,
        data=urlencode(params),
        headers={**twilio_headers(path, params), "Content-Type": "application/x-www-form-urlencoded"},
    )
    return response.status, response.content_type, await response.text()


async def test_twilio_reply_inline_as_twiml(srv, fake_api: FakeApi) -> None:
    status, kind, text = await post_sms(srv, sms("SM1", "status?"))
    assert (status, kind) == (200, "application/xml")
    assert (
        text
        == '<?xml version="1.0" encoding="UTF-8"?><Response><Message>ok &lt;status?&gt; &amp; done</Message></Response>'
    )
    assert not fake_api.to("/Messages.json")
    # Repeated MessageSid: an empty TwiML answer and no second run.
    assert await post_sms(srv, sms("SM1", "status?")) == (
        200,
        "application/xml",
        '<?xml version="1.0" encoding="UTF-8"?><Response/>',
    )
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="twilio", outcome="accepted") == 1
    assert metric_value(metrics, "chat_events_total", platform="twilio", outcome="duplicate") == 1


async def test_twilio_deferred_reply_through_the_messages_api(srv, fake_api: FakeApi) -> None:
    params = sms("SM2", "report please", sender="whatsapp:+15550002222")
    started = time.monotonic()
    assert await post_sms(srv, params) == (200, "application/xml", '<?xml version="1.0" encoding="UTF-8"?><Response/>')
    assert time.monotonic() - started < 0.9
    await until(lambda: fake_api.to("/Messages.json"))
    call = fake_api.to("/Messages.json")[0]
    assert call.path == f"/twilio/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    assert call.body == {"From": "+15559998888", "To": "whatsapp:+15550002222", "Body": "report ready"}
    assert call.headers["Authorization"].startswith("Basic ")
    import base64

    assert base64.b64decode(call.headers["Authorization"][6:]).decode() == f"{TWILIO_SID}:{TWILIO_TOKEN}"


async def test_twilio_bad_signature_and_query_string(srv) -> None:
    params = sms("SM3", "status")
    forged = {"X-Twilio-Signature": twilio_headers(SMS_PATH, {**params, "Body": "other"})["X-Twilio-Signature"]}
    response = await srv.client.post(SMS_PATH, data=params, headers=forged)
    assert (response.status, await response.json()) == (401, {"error": "bad Twilio signature"})
    response = await srv.client.post(SMS_PATH, data=params)
    assert (response.status, await response.json()) == (401, {"error": "missing X-Twilio-Signature"})
    # The query string is part of the signed URL.
    status, _, text = await post_sms(srv, sms("SM4", "status"), path=SMS_PATH + "?tenant=a")
    assert status == 200 and "<Message>" in text
    status, _, _ = await post_sms(srv, {"From": "+1", "Body": "status"})
    assert status == 400
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="twilio", outcome="rejected") == 2
    assert metric_value(metrics, "chat_events_total", platform="twilio", outcome="invalid") == 1


def update(update_id: int, text: str = "help", **extra: Any) -> dict[str, Any]:
    message = {"message_id": 42, "chat": {"id": -100}, "from": {"id": 7, "is_bot": False}, "text": text, **extra}
    return {"update_id": update_id, "message": message}


async def telegram(srv: Any, body: Any, bot: str = "support", secret: str = TELEGRAM_SECRET) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
    response = await srv.client.post(f"/webhooks/telegram/{bot}", json=body, headers=headers)
    return response.status


async def test_telegram_secret_dedupe_and_threaded_reply(srv, fake_api: FakeApi) -> None:
    assert await telegram(srv, update(1001), secret="wrong") == 401
    assert await telegram(srv, update(1001), secret="") == 401
    assert await telegram(srv, update(1001), bot="other") == 404
    assert await telegram(srv, update(1001)) == 200
    assert await telegram(srv, update(1001)) == 200
    assert await telegram(srv, {"message": {}}) == 400
    await until(lambda: fake_api.to("/sendMessage"))
    assert await telegram(srv, update(1002)) == 200
    await until(lambda: len(fake_api.to("/sendMessage")) == 2)
    call = fake_api.to("/sendMessage")[0]
    assert call.path == f"/telegram/bot{TELEGRAM_TOKEN}/sendMessage"
    assert call.body == {"chat_id": "-100", "text": "hi 7", "reply_to_message_id": 42}
    assert [c["trigger"]["event_id"] for c in CALLS] == ["1001", "1002"]
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="telegram", outcome="rejected") == 2
    assert metric_value(metrics, "chat_events_total", platform="telegram", outcome="duplicate") == 1
    assert metric_value(metrics, "chat_events_total", platform="telegram", outcome="invalid") == 1


async def test_telegram_error_names_the_platforms_description(srv, fake_api: FakeApi) -> None:
    path = f"/telegram/bot{TELEGRAM_TOKEN}/sendMessage"
    fake_api.script[path] = [(400, {"ok": False, "description": "Bad Request: chat not found"}, {})]
    response = await srv.client.post("/tg-say", json={})
    body = await response.json()
    assert (response.status, body["error"]) == (502, "telegram: sendMessage failed: Bad Request: chat not found")
    assert fake_api.to("/sendMessage")[0].body == {"chat_id": "-5", "text": "hello"}
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_replies_total", platform="telegram", status="error") == 1


def github(body: bytes, secret: str = GITHUB_SECRET) -> str:
    """GitHub's X-Hub-Signature-256 value."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_generic_github_signature_event_and_delivery_dedupe(srv) -> None:
    body = json.dumps({"ref": "refs/heads/main", "sender": {"login": "octocat"}}).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    url = "/webhooks/generic/github"
    response = await srv.client.post(url, data=body, headers={**headers, "X-Hub-Signature-256": github(body, "nope")})
    assert (response.status, await response.json()) == (401, {"error": "bad signature in X-Hub-Signature-256"})
    response = await srv.client.post(url, data=body, headers=headers)
    assert (response.status, await response.json()) == (401, {"error": "missing X-Hub-Signature-256"})
    signed = {**headers, "X-Hub-Signature-256": github(body)}
    for _ in range(2):
        response = await srv.client.post(url, data=body, headers=signed)
        assert response.status == 200
    assert (await srv.client.post("/webhooks/generic/gitlab", data=body, headers=signed)).status == 404
    response = await srv.client.post(url, data=b"[1]", headers={**headers, "X-Hub-Signature-256": github(b"[1]")})
    assert (response.status, await response.json()) == (400, {"error": "the body must be a JSON object"})
    # A signed body is still untrusted JSON: nesting and numbers within the server's limits, no traceback.
    for raw, error in (
        (
            b"[" * 5000 + b"]" * 5000,
            "the body: JSON nested deeper than the limit of 64 levels (WORKFLOW_MAX_JSON_DEPTH)",
        ),
        (b'{"n": NaN}', "the body: NaN is not a JSON number"),
        (b"{oops", "the body: not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2"),
    ):
        response = await srv.client.post(url, data=raw, headers={**headers, "X-Hub-Signature-256": github(raw)})
        assert (response.status, await response.json()) == (400, {"error": error})
    await until(lambda: CALLS)
    trigger = CALLS[0]["trigger"]
    assert (trigger["user"], trigger["event"], trigger["event_id"]) == ("octocat", "push", headers["X-GitHub-Delivery"])
    assert len(CALLS) == 1
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="generic", outcome="duplicate") == 1


async def test_generic_timestamp_window_and_body_dedupe(serve) -> None:
    srv = await serve(
        "chat:\n"
        "  generic:\n"
        "    stamped: {secret: s2, header: X-Signature, prefix: '', timestamp_header: X-Timestamp, window: 60}\n"
        "pipelines:\n"
        "  p:\n"
        "    trigger: {type: chat, config: {platform: generic, name: stamped}}\n"
        "    steps: [{name: seen, type: test.record}]\n"
    )
    await until(lambda: srv.engine.ready)
    body = b'{"text": "deploy done"}'
    signature = hmac.new(b"s2", body, hashlib.sha256).hexdigest()
    url = "/webhooks/generic/stamped"

    async def send(stamp: str) -> tuple[int, str]:
        response = await srv.client.post(url, data=body, headers={"X-Signature": signature, "X-Timestamp": stamp})
        return response.status, await response.text()

    status, text = await send(str(int(time.time()) - 61))
    assert (status, json.loads(text)) == (401, {"error": "missing or stale X-Timestamp"})
    assert await send(str(int(time.time()))) == (200, "")
    assert await send(str(int(time.time()))) == (200, "")  # no delivery id: the same body is the same delivery
    await until(lambda: CALLS)
    assert (
        CALLS[0]["trigger"]["text"] == "deploy done"
        and CALLS[0]["trigger"]["event_id"] == hashlib.sha256(body).hexdigest()
    )
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="generic", outcome="duplicate") == 1
    assert metric_value(metrics, "chat_events_total", platform="generic", outcome="rejected") == 1
