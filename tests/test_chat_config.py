"""The `chat:` block and chat trigger filters: checked at load with file:line, secrets off when empty."""

from __future__ import annotations

import time

import pytest

from server.config.loader import load_config_text
from server.errors import ConfigError
from server.hooks.manager import build_plugin_manager
from server.hooks.registry import Registry, build_registry
from tests.conftest import until


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry(build_plugin_manager(entry_points=False))


def problems(text: str, registry: Registry, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, registry, source="F", env=env or {})
    return info.value.problems


STEP = "    steps: [{name: log, type: step.log, config: {message: hi}}]\n"


def test_bad_regex_and_unknown_filters_are_errors_with_their_line(registry: Registry) -> None:
    text = (
        "pipelines:\n"
        "  p:\n"
        "    trigger:\n"
        "      type: chat\n"
        "      config:\n"
        "        platform: slack\n"
        "        matches: '(unclosed'\n"
        "        colour: red\n"
        "        channel: [C1, 2]\n" + STEP
    )
    found = sorted(problems(text, registry))
    assert found[0].startswith("F:7: pipeline 'p': 'matches' is not a valid regular expression: ")
    assert found[1:] == [
        "F:8: pipeline 'p': unknown chat filter 'colour' (expected one of platform, name, channel, user, command, "
        "event, subtypes, contains, matches)",
        "F:9: pipeline 'p': chat filter 'channel' must be a string or a list of strings",
    ]


def test_chat_block_errors(registry: Registry) -> None:
    text = (
        "chat:\n"
        "  slack: {signing_secret: s, colour: red}\n"
        "  twilio: {auth_token: t}\n"
        "  Dis-cord: {}\n"
        "  generic: {gh: {secret: s, window: -1}}\n"
        "  telegram: {bots: {b: {token: 1}}}\n"
        "pipelines:\n  p:\n    trigger: {type: manual}\n" + STEP
    )
    assert problems(text, registry) == [
        "F:2: chat.slack: unknown key 'colour' (expected one of signing_secret, bot_token, api_base, reply_budget)",
        "F:3: chat.twilio needs 'public_url': Twilio signs the public URL it calls",
        "F:4: chat: platform name 'Dis-cord' must be lower-case letters, digits and '_'",
        "F:5: chat.generic.gh.window must be a positive number of seconds",
        "F:6: chat.telegram.bots.b.token must be a string",
    ]


def test_an_empty_secret_turns_the_platform_off(registry: Registry) -> None:
    text = (
        "chat:\n"
        "  slack: {signing_secret: '${SLACK_SIGNING_SECRET:-}'}\n"
        "  generic: {live: {secret: x}, dark: {secret: '${NOPE:-}'}}\n"
        "pipelines:\n  p:\n    trigger: {type: chat, config: {platform: slack}}\n" + STEP
    )
    config = load_config_text(text, registry, env={})
    assert set(config.chat) == {"generic"} and set(config.chat["generic"]) == {"live"}
    config = load_config_text(text, registry, env={"SLACK_SIGNING_SECRET": "abc"})
    assert config.chat["slack"]["signing_secret"] == "abc"
    assert config.chat["slack"]["api_base"] == "https://slack.com/api"


def test_a_catastrophic_pattern_on_hostile_text_is_bounded(registry: Registry) -> None:
    text = "pipelines:\n  p:\n    trigger: {type: chat, config: {platform: slack, matches: '(x+x+)+y'}}\n" + STEP
    chat = load_config_text(text, registry).pipelines["p"].trigger.chat
    assert chat is not None
    started = time.monotonic()
    assert not chat.accepts({"platform": "slack", "text": "x" * 100_000})
    assert time.monotonic() - started < 0.5  # the regex engine's timeout, not the seconds backtracking would take


async def test_platform_turned_off_answers_404(serve) -> None:
    srv = await serve(
        "chat:\n  slack: {signing_secret: ''}\n"
        "pipelines:\n  p:\n    trigger: {type: chat, config: {platform: slack}}\n" + STEP
    )
    await until(lambda: srv.engine.ready)
    response = await srv.client.post("/webhooks/slack/events", data="{}")
    assert response.status == 404
    assert await response.json() == {"error": "the slack platform is not configured (no chat.slack block or secret)"}
