"""Pipeline deadlines on shared timers: one loop timer per slice of time instead of one per execution."""

from __future__ import annotations

import asyncio
import math
from typing import Protocol, final


class Expiring(Protocol):
    """Something with a deadline: `expire()` is called once it has passed."""

    def expire(self) -> None: ...


@final  # so that `type(token) is _Slice` tells the two kinds of token apart for mypy too
class _Slice:
    """The entries whose deadlines fall in one slice of time, and the timer that expires them."""

    __slots__ = ("key", "members", "timer")

    def __init__(self, key: int) -> None:
        self.key = key
        self.members: dict[Expiring, None] = {}
        self.timer: asyncio.TimerHandle | None = None


class Deadlines:
    """Calls `expire()` on every entry still registered when its deadline passes.

    A timer of the event loop costs about as much as running a small step (a handle, a push onto
    the loop's heap, a cancel and, later, a sweep of the cancelled handles), and nearly every
    execution cancels its timer unused. So deadlines at least `exact_below` seconds away share
    one timer per `resolution`-long slice of time, and fire up to `resolution` late; shorter
    ones keep a timer of their own and fire on time. A slice whose entries all finished keeps its
    timer (cancelling it per execution would cost what sharing saves) until `max_timers` slices
    exist: then the idle ones are cancelled at once, so hour-long deadlines do not pile up timers.
    """

    def __init__(self, resolution: float = 0.01, exact_below: float = 0.5, max_timers: int = 1000) -> None:
        if resolution <= 0 or exact_below < 0 or max_timers < 1:
            raise ValueError("resolution and max_timers must be positive, exact_below not negative")
        self.resolution, self.exact_below, self.max_timers = resolution, exact_below, max_timers
        self._slices: dict[int, _Slice] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, loop: asyncio.AbstractEventLoop, deadline: float, entry: Expiring) -> _Slice | asyncio.TimerHandle:
        """Register `entry` to expire at loop time `deadline`; pass the token returned to `discard`."""
        if deadline - loop.time() < self.exact_below:
            return loop.call_at(deadline, entry.expire)
        if loop is not self._loop:  # slices belong to the loop whose timers serve them
            self._loop, self._slices = loop, {}
        key = math.ceil(deadline / self.resolution)
        shared = self._slices.get(key)
        if shared is None:
            if len(self._slices) >= self.max_timers:
                self._sweep()
            shared = self._slices[key] = _Slice(key)
            shared.timer = loop.call_at(key * self.resolution, self._fire, shared)
        shared.members[entry] = None
        return shared

    @staticmethod
    def discard(entry: Expiring, token: _Slice | asyncio.TimerHandle) -> None:
        """Unregister `entry` (it finished in time); harmless once it has expired."""
        if type(token) is _Slice:
            token.members.pop(entry, None)
        else:
            token.cancel()

    def _sweep(self) -> None:
        """Cancel the timers of the slices with no entries left."""
        for key, shared in list(self._slices.items()):
            if not shared.members and shared.timer is not None:
                shared.timer.cancel()
                del self._slices[key]

    def _fire(self, shared: _Slice) -> None:
        shared.timer = None
        if self._slices.get(shared.key) is shared:
            del self._slices[shared.key]
        for entry in list(shared.members):
            entry.expire()
        shared.members.clear()

    def __len__(self) -> int:
        """Entries waiting on shared timers (those with timers of their own are not counted)."""
        return sum(len(shared.members) for shared in self._slices.values())

    @property
    def timers(self) -> int:
        """Shared timers pending on the loop."""
        return len(self._slices)
