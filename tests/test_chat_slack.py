"""Slack: signed events, url_verification, retries, the bot's own messages, filters, commands and replies."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.chat_fake import FakeApi, chat_config, slack_headers
from tests.conftest import metric_value, until
from tests.pipeline_plugin import CALLS

PIPELINES = """
  triage:
    trigger: {type: chat, config: {platform: slack, channel: C1}}
    steps:
      - {name: seen, type: test.record}
      - {name: reply, type: step.chat_reply, config: {text: "got: {{ .text }}", thread: true}}
  edits:
    trigger: {type: chat, config: {platform: slack, channel: C2, subtypes: [message_changed]}}
    steps:
      - {name: seen, type: test.record}
  urgent:
    trigger: {type: chat, config: {platform: slack, channel: C3, contains: URGENT, matches: "^order-[0-9]+"}}
    steps:
      - {name: seen, type: test.record}
  fast:
    trigger: {type: chat, config: {platform: slack, command: /fast}}
    steps:
      - {name: reply, type: step.chat_reply, config: {text: "fast {{ .text }}"}}
  slow:
    trigger: {type: chat, config: {platform: slack, command: /slow}}
    steps:
      - {name: wait, type: test.sleep, config: {seconds: 1}}
      - {name: reply, type: step.chat_reply, config: {text: "slow {{ .text }}"}}
  clicked:
    trigger: {type: chat, config: {platform: slack, event: block_actions}}
    steps:
      - {name: reply, type: step.chat_reply, config: {text: "clicked {{ .text }}"}}
  say-blocks:
    trigger: {type: http, config: {path: /say-blocks, method: POST}}
    steps:
      - name: reply
        type: step.chat_reply
        config:
          platform: slack
          channel: C5
          text: fallback
          blocks: [{type: section, text: {type: mrkdwn, text: "*bold*"}}]
  say:
    trigger: {type: http, config: {path: /say, method: POST}}
    steps:
      - {name: reply, type: step.chat_reply, config: {platform: slack, channel: C9, text: "x"}}
"""


def envelope(event_id: str, **event: Any) -> str:
    """An event_callback body."""
    base = {"type": "message", "channel": "C1", "user": "U1", "text": "hello", "ts": "1700000000.000100"}
    return json.dumps({"type": "event_callback", "team_id": "T1", "event_id": event_id, "event": {**base, **event}})


async def slack(srv: Any, body: str, path: str = "/webhooks/slack/events", **headers: str) -> tuple[int, str]:
    """POST a body signed now by slack_sdk; the status and text of the answer."""
    signed = slack_headers(body, int(time.time()), **headers)
    response = await srv.client.post(path, data=body, headers=signed)
    return response.status, await response.text()


@pytest.fixture
async def srv(serve, fake_api: FakeApi) -> Any:
    server = await serve(chat_config(fake_api.url, PIPELINES))
    await until(lambda: server.engine.ready)
    return server


async def test_url_verification_answers_the_challenge(srv) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    status, text = await slack(srv, body)
    assert (status, json.loads(text)) == (200, {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})


async def test_event_is_acknowledged_then_runs_and_replies_in_thread(srv, fake_api: FakeApi) -> None:
    assert await slack(srv, envelope("Ev1")) == (200, "")
    await until(lambda: fake_api.to("/chat.postMessage"))
    assert CALLS[0]["trigger"]["text"] == "hello" and CALLS[0]["trigger"]["event_id"] == "Ev1"
    assert {k: CALLS[0]["trigger"][k] for k in ("platform", "channel", "user", "thread")} == {
        "platform": "slack",
        "channel": "C1",
        "user": "U1",
        "thread": "1700000000.000100",
    }
    call = fake_api.to("/chat.postMessage")[0]
    assert call.body == {"text": "got: hello", "channel": "C1", "thread_ts": "1700000000.000100"}
    assert call.headers["Authorization"] == "Bearer xoxb-test"
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="slack", outcome="accepted") == 1
    assert metric_value(metrics, "chat_replies_total", platform="slack", status="success") == 1
    assert metric_value(metrics, "chat_reply_duration_seconds_count", platform="slack") == 1
    assert metric_value(metrics, "chat_ack_duration_seconds_count", platform="slack") == 1


async def test_bad_missing_and_stale_signatures_are_401_and_run_nothing(srv) -> None:
    body = envelope("Ev2")
    good = slack_headers(body, int(time.time()))
    forged = {**good, "X-Slack-Signature": "v0=" + "0" * 64}
    response = await srv.client.post("/webhooks/slack/events", data=body, headers=forged)
    assert (response.status, await response.json()) == (401, {"error": "bad Slack signature"})
    response = await srv.client.post("/webhooks/slack/events", data=body)
    assert response.status == 401
    assert await response.json() == {"error": "missing X-Slack-Signature or X-Slack-Request-Timestamp"}
    stale = slack_headers(body, int(time.time()) - 301)  # signed correctly, but outside the 5-minute window
    response = await srv.client.post("/webhooks/slack/events", data=body, headers=stale)
    assert (response.status, await response.json()) == (
        401,
        {"error": "stale Slack request timestamp (more than 5 minutes off)"},
    )
    # The same event, now signed correctly, runs: nothing refused was recorded as seen.
    assert await slack(srv, body) == (200, "")
    await until(lambda: CALLS)
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="slack", outcome="rejected") == 3
    assert metric_value(metrics, "chat_events_total", platform="slack", outcome="accepted") == 1
    assert len(CALLS) == 1


async def test_retries_and_repeated_event_ids_run_once(srv, fake_api: FakeApi) -> None:
    body = envelope("Ev3")
    assert await slack(srv, body) == (200, "")
    assert await slack(srv, body, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}) == (200, "")
    assert await slack(srv, body) == (200, "")
    await until(lambda: fake_api.to("/chat.postMessage"))
    assert await slack(srv, envelope("Ev4")) == (200, "")  # a new id runs: after it, the repeats surely did not
    await until(lambda: len(fake_api.to("/chat.postMessage")) == 2)
    assert [c["trigger"]["event_id"] for c in CALLS] == ["Ev3", "Ev4"]
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="slack", outcome="duplicate") == 2


async def test_the_bots_own_messages_never_start_a_pipeline(srv) -> None:
    assert await slack(srv, envelope("Ev5", bot_id="B1", user="UOTHER")) == (200, "")
    assert await slack(srv, envelope("Ev6", user="UBOT")) == (200, "")  # the user auth.test names
    assert await slack(srv, envelope("Ev7", user="U1")) == (200, "")
    await until(lambda: CALLS)
    assert [c["trigger"]["event_id"] for c in CALLS] == ["Ev7"]
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="slack", outcome="ignored") == 2


async def test_subtypes_only_where_a_trigger_lists_them(srv) -> None:
    assert await slack(srv, envelope("Ev8", subtype="message_changed")) == (200, "")  # C1: not listed
    assert await slack(srv, envelope("Ev9", subtype="message_deleted", channel="C2")) == (200, "")
    assert await slack(srv, envelope("Ev10", subtype="message_changed", channel="C2")) == (200, "")
    await until(lambda: CALLS)
    assert [c["trigger"]["event_id"] for c in CALLS] == ["Ev10"]
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="slack", outcome="ignored") == 2


async def test_contains_and_matches_filters(srv) -> None:
    for n, text in enumerate(["order-12 is URGENT", "order-12 is urgent", "URGENT order-12", "order-x URGENT"]):
        assert await slack(srv, envelope(f"Ev2{n}", channel="C3", text=text)) == (200, "")
    await until(lambda: len(CALLS) == 2)  # queued jobs: the two that match, in either order
    assert sorted(c["trigger"]["text"] for c in CALLS) == ["order-12 is URGENT", "order-12 is urgent"]


async def test_malformed_body_is_400(srv) -> None:
    status, text = await slack(srv, "{not json")
    expected = "the body: not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2"
    assert (status, json.loads(text)) == (400, {"error": expected})
    status, text = await slack(srv, '["not", "an", "envelope"]')
    assert (status, json.loads(text)) == (400, {"error": "the body is not a Slack Events API JSON envelope"})
    status, text = await slack(srv, json.dumps({"type": "event_callback", "event": {}}))
    assert (status, json.loads(text)) == (400, {"error": "an event_callback needs 'event' and 'event_id'"})
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="slack", outcome="invalid") == 3


def command(name: str, trigger_id: str, response_url: str = "") -> str:
    """A slash command's form body."""
    from urllib.parse import urlencode

    fields = {"command": name, "text": "hi", "team_id": "T1", "channel_id": "C7", "user_id": "U1"}
    return urlencode({**fields, "trigger_id": trigger_id, "response_url": response_url})


async def test_slash_command_reply_inline_when_ready_in_time(srv, fake_api: FakeApi) -> None:
    body = command("/fast", "13345224609.738474920.8088930838d88f008e0")
    status, text = await slack(
        srv, body, "/webhooks/slack/commands", **{"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert (status, json.loads(text)) == (200, {"text": "fast hi"})
    assert not fake_api.calls[1:]  # only auth.test, if anything: the reply went in the answer
    status, text = await slack(srv, body, "/webhooks/slack/commands")  # the same trigger_id again
    assert (status, text) == (200, "")


async def test_slash_command_deferred_to_response_url(srv, fake_api: FakeApi) -> None:
    body = command("/slow", "trig-slow", f"{fake_api.url}/commands/T1/1234/abcd")
    started = time.monotonic()
    assert await slack(srv, body, "/webhooks/slack/commands") == (200, "")
    assert time.monotonic() - started < 0.9  # the budget is 0.5 s: acknowledged long before the 1 s step ends
    await until(lambda: fake_api.to("/commands/T1/1234/abcd"))
    assert fake_api.to("/commands/T1/1234/abcd")[0].body == {"text": "slow hi"}


async def test_reply_retries_429_and_500_then_succeeds(srv, fake_api: FakeApi) -> None:
    fake_api.script["/slack/api/chat.postMessage"] = [
        (429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "0"}),
        (500, "oops", {}),
    ]
    assert await slack(srv, envelope("Ev30")) == (200, "")
    await until(lambda: len(fake_api.to("/chat.postMessage")) == 3)
    metrics = await until(lambda: _replied(srv))
    assert metric_value(metrics, "chat_replies_total", platform="slack", status="success") == 1


async def test_platform_error_is_a_step_error_naming_it(srv, fake_api: FakeApi) -> None:
    fake_api.script["/slack/api/chat.postMessage"] = [(200, {"ok": False, "error": "channel_not_found"}, {})]
    response = await srv.client.post("/say", json={})
    body = await response.json()
    assert (response.status, body["error"], body["step"]) == (
        502,
        "slack: chat.postMessage failed: channel_not_found",
        "reply",
    )
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_replies_total", platform="slack", status="error") == 1


async def test_reply_gives_up_after_three_5xx(srv, fake_api: FakeApi) -> None:
    fake_api.script["/slack/api/chat.postMessage"] = [(503, "down", {})] * 3 + [(200, {"ok": True}, {})]
    started = time.monotonic()
    response = await srv.client.post("/say", json={})
    assert response.status == 502
    assert (await response.json())["error"] == "slack: chat.postMessage failed: HTTP 503"
    assert len(fake_api.to("/chat.postMessage")) == 3 and time.monotonic() - started < 3
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_replies_total", platform="slack", status="error") == 1


async def _replied(srv: Any) -> str | None:
    text = await srv.metrics()
    return text if "chat_replies_total{" in text else None


async def test_endpoints_answer_404_without_a_chat_block(serve) -> None:
    srv = await serve("""
pipelines:
  p:
    trigger: {type: chat, config: {platform: slack}}
    steps:
      - {name: seen, type: test.record}
""")
    await until(lambda: srv.engine.ready)
    for path in (
        "/webhooks/slack/events",
        "/webhooks/slack/commands",
        "/webhooks/twilio/sms",
        "/webhooks/telegram/support",
        "/webhooks/generic/github",
    ):
        response = await srv.client.post(path, data="{}")
        assert response.status == 404, path


async def test_interaction_payload_runs_and_replies_through_response_url(srv, fake_api: FakeApi) -> None:
    from urllib.parse import urlencode

    payload = {
        "type": "block_actions",
        "trigger_id": "trig-block-1",
        "team": {"id": "T1"},
        "user": {"id": "U1"},
        "channel": {"id": "C4"},
        "response_url": f"{fake_api.url}/actions/T1/99/xyz",
        "actions": [{"action_id": "approve", "value": "yes", "action_ts": "1700000001.1"}],
    }
    body = urlencode({"payload": json.dumps(payload)})
    assert await slack(srv, body, "/webhooks/slack/interactions") == (200, "")
    assert await slack(srv, body, "/webhooks/slack/interactions") == (200, "")  # the same trigger_id: once
    await until(lambda: fake_api.to("/actions/T1/99/xyz"))
    assert fake_api.to("/actions/T1/99/xyz")[0].body == {"text": "clicked yes"}
    status, text = await slack(srv, urlencode({"payload": "{nope"}), "/webhooks/slack/interactions")
    expected = "the body: not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2"
    assert (status, json.loads(text)) == (400, {"error": expected})
    status, text = await slack(srv, urlencode({"payload": "[1]"}), "/webhooks/slack/interactions")
    assert (status, json.loads(text)) == (400, {"error": "an interaction needs a JSON 'payload' field with a 'type'"})
    assert len(fake_api.to("/actions/T1/99/xyz")) == 1


async def test_reply_with_blocks_to_a_named_channel(srv, fake_api: FakeApi) -> None:
    response = await srv.client.post("/say-blocks", json={})
    assert response.status == 200
    assert (await response.json())["reply"] == {
        "platform": "slack",
        "inline": False,
        "ts": "1700000000.000200",
        "channel": "C5",
    }
    assert fake_api.to("/chat.postMessage")[0].body == {
        "text": "fallback",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*bold*"}}],
        "channel": "C5",
    }
