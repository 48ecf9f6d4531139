"""The `chat:` block and the filters of chat triggers, checked and compiled when the config loads."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import regex

from .yamlload import LineDict

Problem = Callable[[int, str], None]
PLATFORM_NAME = regex.compile(r"[a-z][a-z0-9_]{0,31}")

API_BASES = {
    "slack": "https://slack.com/api",
    "twilio": "https://api.twilio.com",
    "telegram": "https://api.telegram.org",
}
# Slack allows 3 s for an answer, Twilio 15 s: 2.5 s leaves room for the network on both.
DEFAULT_REPLY_BUDGET = 2.5
PLATFORM_KEYS = {
    "slack": ("signing_secret", "bot_token", "api_base", "reply_budget"),
    "twilio": ("auth_token", "account_sid", "public_url", "api_base", "reply_budget"),
    "telegram": ("bots", "api_base"),
}
# The secret whose empty value turns the platform (or one bot, or one generic endpoint) off.
SECRETS = {"slack": "signing_secret", "twilio": "auth_token"}
BOT_KEYS = ("token", "secret_token")
GENERIC_KEYS = ("secret", "header", "prefix", "timestamp_header", "window", "delivery_header", "event_header")
GENERIC_DEFAULTS = {"header": "X-Hub-Signature-256", "prefix": "sha256=", "event_header": "X-GitHub-Event"}
FILTER_KEYS = ("platform", "name", "channel", "user", "command", "event", "subtypes", "contains", "matches")
# `matches` runs on untrusted text: the `regex` engine's timeout bounds the worst case, and the text is cut first.
MATCH_TIMEOUT = 0.05
MATCH_MAX_CHARS = 4096


def parse_chat(raw: Any, line: int, problem: Problem) -> dict[str, dict[str, Any]]:
    """The enabled platforms' settings by platform; a built-in one whose secret is empty is left out (off).

    Any other name is a platform a component provides: its block is handed to the component as written.
    """
    if raw is None:
        return {}
    if not isinstance(raw, LineDict):
        problem(line, "'chat' must be a mapping of platform names (slack, twilio, telegram, generic)")
        return {}
    enabled: dict[str, dict[str, Any]] = {}
    for platform, block in raw.items():
        at = raw.line_of(platform)
        if not isinstance(block, LineDict):
            problem(at, f"chat.{platform} must be a mapping")
        elif platform == "generic":
            endpoints = {name: _generic(str(name), cfg, block.line_of(name), problem) for name, cfg in block.items()}
            if live := {name: cfg for name, cfg in endpoints.items() if cfg}:
                enabled[platform] = live
        elif platform not in PLATFORM_KEYS:
            if _component_platform(str(platform), block, at, problem):
                enabled[platform] = dict(block)
        elif settings := _platform(platform, block, problem):
            enabled[platform] = settings
    return enabled


def _component_platform(platform: str, block: LineDict, line: int, problem: Problem) -> bool:
    """A platform a component provides: a lower-case name and plain values, handed to the component as given."""
    if not PLATFORM_NAME.fullmatch(platform):
        problem(line, f"chat: platform name {platform!r} must be lower-case letters, digits and '_'")
        return False
    return True


def _platform(platform: str, block: LineDict, problem: Problem) -> dict[str, Any]:
    """One platform's settings with defaults, or {} when its secret is empty."""
    ok = _known_strings(f"chat.{platform}", block, PLATFORM_KEYS[platform], problem, skip=("bots", "reply_budget"))
    settings: dict[str, Any] = {"api_base": API_BASES[platform], "reply_budget": DEFAULT_REPLY_BUDGET, **block}
    settings["api_base"] = str(settings["api_base"]).rstrip("/")
    budget = settings["reply_budget"]
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not 0 <= budget < 3:
        problem(block.line_of("reply_budget"), f"chat.{platform}.reply_budget must be seconds in [0, 3)")
        ok = False
    if platform == "telegram":
        bots = block.get("bots")
        if not isinstance(bots, LineDict):
            problem(block.line_of("bots"), "chat.telegram.bots must map bot names to {token, secret_token}")
            return {}
        settings["bots"] = {}
        for name, bot in bots.items():
            where = f"chat.telegram.bots.{name}"
            if not isinstance(bot, LineDict):
                problem(bots.line_of(name), f"{where} must be a mapping with token and secret_token")
            elif _known_strings(where, bot, BOT_KEYS, problem) and all(bot.get(k) for k in BOT_KEYS):
                settings["bots"][str(name)] = dict(bot)
        return settings if ok and settings["bots"] else {}
    if platform == "twilio" and block.get("auth_token") and not block.get("public_url"):
        problem(block.line, "chat.twilio needs 'public_url': Twilio signs the public URL it calls")
        ok = False
    return settings if ok and block.get(SECRETS[platform]) else {}


def _generic(name: str, block: Any, line: int, problem: Problem) -> dict[str, Any]:
    """One generic endpoint's settings with GitHub's defaults, or {} when its secret is empty."""
    where = f"chat.generic.{name}"
    if not isinstance(block, LineDict):
        problem(line, f"{where} must be a mapping with at least 'secret'")
        return {}
    ok = _known_strings(where, block, GENERIC_KEYS, problem, skip=("window",))
    settings: dict[str, Any] = {**GENERIC_DEFAULTS, "window": 300, "timestamp_header": "", "delivery_header": ""}
    settings.update(block)
    window = settings["window"]
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        problem(block.line_of("window"), f"{where}.window must be a positive number of seconds")
        ok = False
    if "delivery_header" not in block and settings["header"].lower() == "x-hub-signature-256":
        settings["delivery_header"] = "X-GitHub-Delivery"  # GitHub's own id of a delivery, kept across redeliveries
    return settings if ok and block.get("secret") else {}


def _known_strings(
    where: str, block: LineDict, keys: tuple[str, ...], problem: Problem, skip: tuple[str, ...] = ()
) -> bool:
    """Every key is known and every value but those in `skip` is a string."""
    ok = True
    for key, value in block.items():
        if key not in keys:
            problem(block.line_of(key), f"{where}: unknown key {key!r} (expected one of {', '.join(keys)})")
            ok = False
        elif key not in skip and not isinstance(value, str):
            problem(block.line_of(key), f"{where}.{key} must be a string")
            ok = False
    return ok


@dataclass(frozen=True, slots=True)
class ChatFilter:
    """A chat trigger's filters; an empty set or string accepts anything."""

    platform: str
    name: frozenset[str] = frozenset()
    channel: frozenset[str] = frozenset()
    user: frozenset[str] = frozenset()
    command: frozenset[str] = frozenset()
    event: frozenset[str] = frozenset()
    subtypes: frozenset[str] = frozenset()
    contains: str = ""
    matches: regex.Pattern[str] | None = None

    def accepts(self, message: Mapping[str, Any]) -> bool:
        """Whether `message` passes every filter (subtyped messages only when `subtypes` lists theirs)."""
        if message.get("platform") != self.platform:
            return False
        subtype = message.get("subtype") or ""
        if subtype and subtype not in self.subtypes:
            return False
        for wanted, key in (
            (self.name, "name"),
            (self.channel, "channel"),
            (self.user, "user"),
            (self.command, "command"),
            (self.event, "event"),
        ):
            if wanted and str(message.get(key) or "") not in wanted:
                return False
        text = str(message.get("text") or "")
        if self.contains and self.contains not in text.lower():
            return False
        if self.matches is not None:
            try:
                return self.matches.search(text[:MATCH_MAX_CHARS], timeout=MATCH_TIMEOUT) is not None
            except TimeoutError:  # pathological pattern on hostile text: treated as no match, the loop moves on
                return False
        return True


def chat_filter(config: Mapping[str, Any], at: Callable[[str], int], where: str, problem: Problem) -> ChatFilter | None:
    """Compile a chat trigger's filters; report unknown keys, wrong types and a bad `matches` regex."""
    ok = True
    sets: dict[str, frozenset[str]] = {}
    for key, value in config.items():
        if key not in FILTER_KEYS:
            problem(at(key), f"{where}: unknown chat filter {key!r} (expected one of {', '.join(FILTER_KEYS)})")
            ok = False
        elif key in ("platform", "contains", "matches"):
            if not isinstance(value, str):
                problem(at(key), f"{where}: chat filter {key!r} must be a string")
                ok = False
        elif isinstance(value, str):
            sets[key] = frozenset((value,))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            sets[key] = frozenset(value)
        else:
            problem(at(key), f"{where}: chat filter {key!r} must be a string or a list of strings")
            ok = False
    pattern = None
    if isinstance(config.get("matches"), str):
        try:
            pattern = regex.compile(config["matches"])
        except regex.error as exc:
            problem(at("matches"), f"{where}: 'matches' is not a valid regular expression: {exc}")
            ok = False
    if not ok:
        return None
    contains = str(config.get("contains") or "").lower()
    return ChatFilter(str(config["platform"]), contains=contains, matches=pattern, **sets)
