"""Compile a pipeline's trigger: its type, and the config keys, path, method and flags that type reads."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .chat import chat_filter
from .durations import parse_duration
from .model import Trigger
from .yamlload import LineDict

Problem = Callable[[int, str], None]  # report (line, message)

TRIGGER_TYPES = ("http", "chat", "event", "schedule", "manual")
CHAT_PLATFORMS = ("slack", "twilio", "telegram", "generic")
RESERVED_PREFIXES = (
    "/healthz",
    "/readyz",
    "/livez",
    "/health",
    "/ready",
    "/live",
    "/metrics",
    "/openapi.json",
    "/executions/",
    "/webhooks/",
)
# The keys each trigger type reads (chat triggers check their filters in config/chat.py).
TRIGGER_KEYS = {"http": ("path", "method", "async"), "event": ("topic",), "schedule": ("interval",), "manual": ()}
# A path: segments of text and `{name}` parameters; no empty segment, no stray brace.
_PATH = re.compile(r"/|(?:/(?:[^/{}]|\{[A-Za-z_][A-Za-z0-9_]*\})+)+/?")


def compile_trigger(
    where: str, raw: Any, line: int, problem: Problem, platforms: tuple[str, ...] = ()
) -> Trigger | None:
    """Compile a trigger; a chat trigger names a built-in platform or one a `chat:` block declares (a component's)."""
    if not isinstance(raw, LineDict):
        problem(line, f"{where}: 'trigger' must be a mapping with a 'type'")
        return None
    kind = raw.get("type")
    if kind not in TRIGGER_TYPES:
        problem(raw.line_of("type"), f"{where}: trigger type {kind!r} is not one of {', '.join(TRIGGER_TYPES)}")
        return None
    config = raw.get("config")
    if config is None:  # absent: problems with its keys point at the trigger
        config = LineDict()
        config.line = line
    if not isinstance(config, dict):
        problem(raw.line_of("config"), f"{where}: trigger config must be a mapping")
        return None
    at = config.line_of if isinstance(config, LineDict) else (lambda _k: line)
    trigger = Trigger(kind, dict(config), line)
    known = TRIGGER_KEYS.get(kind)
    unknown = [key for key in config if known is not None and key not in known]
    for key in unknown:
        expected = f"expected {', '.join(known)}" if known else "it takes no config"
        problem(at(key), f"{where}: unknown key {key!r} in the {kind} trigger's config ({expected})")
    # Unknown keys are reported and the trigger still compiled, so its route is checked against the others.
    if kind == "http":
        return _http_trigger(where, config, line, at, problem)
    if kind == "event":
        topic = config.get("topic")
        if not isinstance(topic, str) or not topic:
            problem(at("topic"), f"{where}: an event trigger needs a 'topic'")
            return None
        return Trigger(kind, dict(config), line, topic=topic)
    if kind == "chat":
        known = CHAT_PLATFORMS + tuple(p for p in platforms if p not in CHAT_PLATFORMS)
        if config.get("platform") not in known:
            problem(at("platform"), f"{where}: a chat trigger needs 'platform': one of {', '.join(known)}")
            return None
        filters = chat_filter(config, at, where, problem)
        return None if filters is None else Trigger(kind, dict(config), line, chat=filters)
    if kind == "schedule":
        if "interval" not in config:
            problem(at("interval"), f"{where}: a schedule trigger needs an 'interval' such as '5m'")
            return None
        try:
            return Trigger(kind, dict(config), line, interval=parse_duration(config["interval"]))
        except ValueError as exc:
            problem(at("interval"), f"{where}: interval: {exc}")
            return None
    return trigger


def _http_trigger(
    where: str, config: dict[str, Any], line: int, at: Callable[[str], int], problem: Problem
) -> Trigger | None:
    """An http trigger: a well-formed path the server does not reserve, a method, and a boolean `async`."""
    ok = True
    path, method, is_async = config.get("path"), str(config.get("method", "POST")).upper(), config.get("async", False)
    if not isinstance(path, str) or not path.startswith("/"):
        problem(at("path"), f"{where}: an http trigger needs a 'path' starting with '/'")
        ok = False
    elif not _PATH.fullmatch(path):
        problem(
            at("path"),
            f"{where}: path {path!r} is malformed: each segment is text or {{name}} parameters,"
            " none is empty, no brace is left open",
        )
        ok = False
    # Whole segments only: /metrics and /metrics/x are the server's, /metrics-summary is not.
    elif any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in RESERVED_PREFIXES):
        problem(at("path"), f"{where}: path {path!r} is reserved by the server")
        ok = False
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        problem(at("method"), f"{where}: method {method!r} is not GET, POST, PUT, PATCH or DELETE")
        ok = False
    if not isinstance(is_async, bool):
        problem(at("async"), f"{where}: 'async' must be true or false, not {is_async!r}")
        ok = False
    if not ok or not isinstance(path, str):
        return None
    return Trigger("http", dict(config), line, path=path, method=method, is_async=is_async)
