"""Component change events between replicas on a Redis channel, with reconnection and backoff."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger("workflow.replication")

CHANNEL = "workflow:components"  # plus ":" and the database's name (and schema) when PostgreSQL is configured
_PUBLISH_TIMEOUT = 2.0
_MIN_BACKOFF, _MAX_BACKOFF = 0.1, 5.0
_POLL = 0.1  # how often the listener looks up from the channel to see whether it should stop

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]
OnConnect = Callable[[], Awaitable[None]]


class ReloadBus:
    """Publishes this replica's component changes and hands other replicas' changes to `on_event`.

    Events are hints, not data: `{"replica", "id", "version", "sha256"}`. A receiver reads the store,
    which holds the truth, so a lost or repeated event costs a reconcile and never a wrong version.
    `on_connect` runs after every (re)subscription, because events sent while disconnected are lost.
    """

    def __init__(
        self, url: str, replica: str, on_event: OnEvent, on_connect: OnConnect, *, channel: str = CHANNEL
    ) -> None:
        self.url, self.replica, self.channel = url, replica, channel
        self.on_event, self.on_connect = on_event, on_connect
        self.connected = False
        self.last_error: str | None = None
        self.received = self.published = self.reconnects = 0
        # Short timeouts: a Redis that stops answering must not hold an admin call or a reload.
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=None, health_check_interval=10
        )
        self._publisher = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=_PUBLISH_TIMEOUT)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.create_task(self._listen_forever(), name="reload-bus")

    async def stop(self) -> None:
        """Stop listening and close both connections, in bounded time."""
        self._stopping.set()
        if self._task is not None:
            # The listener notices within _POLL seconds. Cancelling it mid-read is the fallback only:
            # redis-py's pub/sub can then wait forever on its connection while closing.
            done, _ = await asyncio.wait({self._task}, timeout=_POLL + 1.0)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1.0)
        for client in (self._client, self._publisher):
            try:
                async with asyncio.timeout(1.0):
                    await client.aclose()
            except (RedisError, OSError, TimeoutError):
                pass  # going away anyway

    async def publish(self, component_id: str, version: int | None, sha256: str | None) -> bool:
        """Tell the other replicas that a component changed; False (logged) when Redis is unreachable."""
        event = {"replica": self.replica, "id": component_id, "version": version, "sha256": sha256}
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT):
                await self._publisher.publish(self.channel, json.dumps(event))
        except (RedisError, OSError, TimeoutError) as exc:
            # The others catch up at their next reconcile (on reconnect, or periodically).
            log.warning("replication: could not publish the change of %s (%s)", component_id, _text(exc))
            return False
        self.published += 1
        return True

    async def _listen_forever(self) -> None:
        backoff = _MIN_BACKOFF
        while not self._stopping.is_set():
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected:
                    backoff = _MIN_BACKOFF  # it worked until now: retry soon, then slower
                if self.connected or self.last_error is None:
                    log.warning(
                        "replication: Redis at %s unavailable (%s); retrying with backoff", _safe(self.url), _text(exc)
                    )
                self.connected, self.last_error = False, _text(exc)
            # Jitter, so replicas that lost Redis together do not all come back in the same instant.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _listen(self) -> None:
        async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(self.channel)
            if self.last_error is not None:
                self.reconnects += 1
                log.info("replication: Redis at %s is back", _safe(self.url))
            self.connected, self.last_error = True, None
            await self.on_connect()
            while not self._stopping.is_set():
                message = await pubsub.get_message(timeout=_POLL)
                if message is not None and message.get("type") == "message":
                    await self._handle(message["data"])

    async def _handle(self, data: bytes) -> None:
        try:
            event = json.loads(data)
            if not isinstance(event, dict) or not isinstance(event.get("id"), str):
                raise ValueError("not a component event")
        except ValueError as exc:
            log.warning("replication: ignored a malformed event on %s (%s)", self.channel, exc)
            return
        if event.get("replica") == self.replica:
            return  # our own change, already applied
        self.received += 1
        try:
            await self.on_event(event)
        except Exception:  # one failed reconcile must not end the subscription; the periodic one retries
            log.exception("replication: applying the change of %s failed", event["id"])


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _safe(url: str) -> str:
    """The URL without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"
