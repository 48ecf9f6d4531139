"""The Discord component: a chat platform added by a hot-reloaded file (Ed25519, PING/PONG, deferred reply)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.chat_fake import FakeApi
from tests.conftest import ROOT, metric_value, until

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def config(api_url: str) -> str:
    return f"""
chat:
  discord: {{public_key: "{PUBLIC}", api_base: "{api_url}/discord"}}
pipelines:
  ping:
    trigger: {{type: chat, config: {{platform: discord, command: ping}}}}
    steps:
      - {{name: reply, type: step.chat_reply, config: {{text: "pong {{{{ .text }}}}"}}}}
"""


def signed(body: str, key: Ed25519PrivateKey = KEY, age: int = 0) -> dict[str, str]:
    timestamp = str(int(time.time()) - age)
    signature = key.sign(timestamp.encode() + body.encode()).hex()
    return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": timestamp, "Content-Type": "application/json"}


def command(interaction_id: str, value: str = "hi") -> str:
    return json.dumps(
        {
            "type": 2,
            "id": interaction_id,
            "application_id": "app1",
            "token": f"tok-{interaction_id}",
            "channel_id": "chan1",
            "member": {"user": {"id": "u1"}},
            "data": {"name": "ping", "options": [{"name": "what", "value": value}]},
        }
    )


async def post(srv: Any, body: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = await srv.client.post("/webhooks/discord/interactions", data=body, headers=headers)
    return response.status, await response.json()


async def test_discord_component_added_and_reloaded_without_restart(
    make_server, fake_api: FakeApi, components: Path
) -> None:
    srv = await make_server(config(fake_api.url), debounce=0.01)
    await until(lambda: srv.engine.ready)
    ping = json.dumps({"type": 1})
    assert (await srv.client.post("/webhooks/discord/interactions", data=ping, headers=signed(ping))).status == 404

    shutil.copy(ROOT / "components" / "discord.py", components / "discord.py")
    await until(lambda: _answers(srv, ping, 200))
    assert await post(srv, ping, signed(ping)) == (200, {"type": 1})
    other = Ed25519PrivateKey.generate()
    assert await post(srv, ping, signed(ping, other)) == (401, {"error": "bad Discord signature"})
    assert await post(srv, ping, {}) == (401, {"error": "missing X-Signature-Ed25519 or X-Signature-Timestamp"})
    assert await post(srv, ping, signed(ping, age=400)) == (401, {"error": "stale X-Signature-Timestamp"})

    body = command("i1")
    assert await post(srv, body, signed(body)) == (200, {"type": 5})
    assert await post(srv, body, signed(body)) == (200, {"type": 5})  # the same interaction again: runs once
    await until(lambda: fake_api.to("/discord/webhooks/app1/tok-i1"))
    assert fake_api.to("/discord/webhooks/app1/tok-i1")[0].body == {"content": "pong hi"}

    # Saving a new version swaps the endpoint and the reply function in, with no restart.
    source = (components / "discord.py").read_text()
    new = source.replace('json={"content": reply.get("text", "")}', 'json={"content": "v2 " + reply.get("text", "")}')
    assert new != source
    temp = components / ".discord.py.tmp"
    temp.write_text(new)
    os.replace(temp, components / "discord.py")
    await until(lambda: _replies_with(srv, fake_api, "v2 pong again"), timeout=10)
    metrics = await srv.metrics()
    assert metric_value(metrics, "chat_events_total", platform="discord", outcome="rejected") == 3
    assert metric_value(metrics, "chat_events_total", platform="discord", outcome="duplicate") == 1
    assert metric_value(metrics, "chat_replies_total", platform="discord", status="success") >= 2


async def _answers(srv: Any, body: str, status: int) -> bool:
    response = await srv.client.post("/webhooks/discord/interactions", data=body, headers=signed(body))
    return response.status == status


_sent: list[str] = []


async def _replies_with(srv: Any, fake_api: FakeApi, content: str) -> bool:
    """Send a new command (a fresh id each time) until its reply carries `content`."""
    interaction = f"r{len(_sent)}"
    _sent.append(interaction)
    body = command(interaction, "again")
    await post(srv, body, signed(body))
    await until(lambda: fake_api.to(f"/tok-{interaction}"))
    return fake_api.to(f"/tok-{interaction}")[0].body == {"content": content}
