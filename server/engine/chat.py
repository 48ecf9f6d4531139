"""Chat events: which pipelines a message starts, de-duplication, inline replies, and the service plugins use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ServiceUnavailable

if TYPE_CHECKING:
    from ..config.loader import AppConfig
    from ..config.model import Pipeline
    from .runner import Engine

# {platform, channel, user, text, event_id, thread, raw} plus `event`, `subtype`, `command` and `name` for filters.
ChatMessage = Mapping[str, Any]
# A platform's reply function: reply(http, settings, message, reply) -> what the step outputs.
Replier = Callable[[Any, Mapping[str, Any], ChatMessage, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


def matching_pipelines(config: AppConfig, message: ChatMessage) -> tuple[Pipeline, ...]:
    """The chat pipelines of `config` whose trigger filters accept `message`."""
    return tuple(
        p
        for p in config.chats.get(str(message.get("platform")), ())
        if p.trigger.chat is not None and p.trigger.chat.accepts(message)
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    """What became of an event: `accepted`, `duplicate` or `ignored`, and the reply if it came within the budget."""

    outcome: str
    reply: Mapping[str, Any] | None = None


def _reply_key(message: ChatMessage) -> tuple[str, str, str]:
    return str(message.get("platform")), str(message.get("name") or ""), str(message.get("event_id"))


class ChatService:
    """What a chat platform plugin needs from the server (handed to plugins as `services.chat`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._waiters: dict[tuple[str, str, str], asyncio.Future[Mapping[str, Any]]] = {}
        self._repliers: dict[str, Replier] = {}

    @property
    def http(self) -> Any:
        """The server's shared aiohttp client session; 503 before the server has opened it."""
        if self._engine.services is None:
            raise ServiceUnavailable("the server is not ready")
        return self._engine.services.http

    def settings(self, platform: str) -> Mapping[str, Any] | None:
        """The platform's block of the config in service; None when absent or turned off (answer 404)."""
        return self._engine.config.chat.get(platform)

    async def accept(self, message: ChatMessage, *, dedupe_key: str, reply_within: float = 0.0) -> Accepted:
        """Start the pipelines `message` matches, once per `dedupe_key`; wait up to `reply_within` s for a reply.

        Raises ServiceUnavailable (503) when the event cannot be stored, so the platform retries.
        """
        platform = str(message.get("platform"))
        if not self._engine.ready:
            raise ServiceUnavailable("the server is not ready")
        if not matching_pipelines(self._engine.config, message):
            self.count(platform, "ignored")
            return Accepted("ignored")
        key, waiter = _reply_key(message), None
        if reply_within > 0 and key not in self._waiters:  # a concurrent duplicate never takes the first's waiter
            waiter = self._waiters[key] = asyncio.get_running_loop().create_future()
        try:
            if not await self._engine.accept(message, dedupe_key=dedupe_key):
                self.count(platform, "duplicate")
                return Accepted("duplicate")
            self.count(platform, "accepted")
            if waiter is None:
                return Accepted("accepted")
            try:
                return Accepted("accepted", await asyncio.wait_for(asyncio.shield(waiter), reply_within))
            except TimeoutError:
                return Accepted("accepted")
        finally:
            if waiter is not None and self._waiters.get(key) is waiter:
                del self._waiters[key]  # from now on a reply goes through the platform's API

    def offer_reply(self, message: ChatMessage, reply: Mapping[str, Any]) -> bool:
        """Hand `reply` to the request still waiting for it (inline answer); False if none waits any more."""
        waiter = self._waiters.pop(_reply_key(message), None)
        if waiter is None or waiter.done():
            return False
        waiter.set_result(reply)
        return True

    def register_replier(self, platform: str, replier: Replier) -> None:
        """Make `replier` the way `step.chat_reply` answers on `platform` (a plugin's or component's startup)."""
        self._repliers[platform] = replier

    def unregister_replier(self, platform: str, replier: Replier) -> None:
        """Remove `replier` if it is still the one registered (a component's shutdown)."""
        if self._repliers.get(platform) is replier:
            del self._repliers[platform]

    def replier(self, platform: str) -> Replier | None:
        """The reply function of `platform`, if one is registered."""
        return self._repliers.get(platform)

    def count(self, platform: str, outcome: str) -> None:
        """Count one webhook request in `chat_events_total`."""
        self._engine.metrics.chat_events.labels(platform, outcome).inc()

    def acknowledged(self, platform: str, seconds: float) -> None:
        """Record one acknowledgement's latency in `chat_ack_duration_seconds`."""
        self._engine.metrics.chat_ack.labels(platform).observe(seconds)

    def replied(self, platform: str, status: str, seconds: float) -> None:
        """Record one reply call in `chat_replies_total` and `chat_reply_duration_seconds`."""
        self._engine.metrics.chat_replies.labels(platform, status).inc()
        self._engine.metrics.chat_reply_duration.labels(platform).observe(seconds)
