"""The admin event stream: Server-Sent Events of component changes, config reloads, replica reports, dead letters.

Each event gets the next id of this replica's stream and is kept in a ring of the last KEPT events, so a
client that reconnects with `Last-Event-ID` gets what it missed (or, when that fell out of the ring, a
`reset` event telling it to reload). A comment line every HEARTBEAT seconds keeps proxies from closing an
idle stream and lets the server notice a client that left. On shutdown every stream ends at once, so a stop
never waits on them. Events are what this replica saw: a change on another replica reaches this one through
the store (and Redis, within milliseconds), and is published here when it serves.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from aiohttp import web

from ..keys import IDENTITY
from ..reload.manager import Event

KEPT = 500
HEARTBEAT = 15.0
_QUEUED = 1000  # events waiting for one slow client; past that it is disconnected and resumes by id

# A write the client does not take within this ends its stream (a client that stopped reading).
WRITE_SECONDS = 5.0


class EventHub:
    """Numbers events, keeps the recent ones, and hands each to every open stream."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        # Milliseconds at start: a restarted server's ids follow the old ones, so a client resuming from an
        # id of the previous process gets `reset` rather than silently missing what happened in between.
        self.last_id = int(time.time() * 1000)
        self.recent: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=KEPT)
        self._streams: set[asyncio.Queue[tuple[int, str, dict[str, Any]] | None]] = set()
        self.closed = False
        self.heartbeat = HEARTBEAT

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send one event to every open stream (never blocks; call it on the loop's thread)."""
        self.last_id += 1
        event = (self.last_id, kind, {"at": time.time(), "replica": self.replica, **data})
        self.recent.append(event)
        for queue in list(self._streams):
            if queue.qsize() >= _QUEUED:
                self._streams.discard(queue)
                queue.put_nowait(None)  # too slow: end its stream, the browser reconnects and resumes
            else:
                queue.put_nowait(event)

    def on_component(self, event: Event) -> None:
        """A ComponentManager subscriber: components committed, removed and refused, and config reloads."""
        if event.kind == "config":
            self.publish("config", {"kind": "reloaded"})
            return
        data: dict[str, Any] = {"kind": event.kind, "id": event.component_id}
        if event.component is not None:
            data.update(version=event.component.version, sha256=event.component.sha256)
        if event.failure is not None:
            data.update(error=event.failure.error, line=event.failure.line, origin=event.failure.origin)
        self.publish("component", data)

    def close(self) -> None:
        """End every open stream now (shutdown)."""
        self.closed = True
        for queue in self._streams:
            queue.put_nowait(None)
        self._streams.clear()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """`GET /api/events[?recent=1]`: the stream, from after `Last-Event-ID` (or `last_id`), or the kept ones."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        queue: asyncio.Queue[tuple[int, str, dict[str, Any]] | None] = asyncio.Queue()
        raw = request.headers.get("Last-Event-ID") or request.query.get("last_id") or ""
        # A resuming client gets what it missed; a first connection may ask for what the ring holds (the timeline).
        backlog = list(self.recent) if request.query.get("recent") else []
        if raw.isascii() and raw.isdigit() and len(raw) <= 18:  # an id we handed out; anything else starts afresh
            backlog = self._since(int(raw))
        self._streams.add(queue)
        try:
            await response.prepare(request)
            await _send(response, b"retry: 1000\n\n")
            for past in backlog:
                await _send(response, _frame(*past))
            identity = request.get(IDENTITY)
            expires = identity.expires if identity is not None else None
            while not self.closed:
                # The stream lives no longer than the token or session that opened it: the client then reconnects,
                # and must sign in again.
                left = self.heartbeat if expires is None else min(self.heartbeat, expires - time.time())
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(left):
                        event = await queue.get()
                except TimeoutError:
                    await _send(response, b": heartbeat\n\n")
                    continue
                if event is None:
                    break
                await _send(response, _frame(*event))
        except (ConnectionResetError, _Stalled):
            pass  # the client left, or stopped reading: nothing to answer
        finally:
            self._streams.discard(queue)
        return response

    def _since(self, last: int) -> list[tuple[int, str, dict[str, Any]]]:
        if last >= self.last_id:
            return []
        if not self.recent or self.recent[0][0] > last + 1:  # some fell out of the ring: start over
            return [(self.last_id, "reset", {"replica": self.replica, "at": time.time()})]
        return [e for e in self.recent if e[0] > last]


def _frame(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


class _Stalled(Exception):
    """The client stopped reading: its stream ends rather than hold a handler (and a shutdown) on a full socket."""


async def _send(response: web.StreamResponse, data: bytes) -> None:
    try:
        async with asyncio.timeout(WRITE_SECONDS):
            await response.write(data)
    except TimeoutError:
        raise _Stalled from None
