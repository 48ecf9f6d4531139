"""Pipeline deadlines on shared timers: one loop timer per slice of time instead of one per execution."""

from __future__ import annotations

import asyncio
import math
from typing import Protocol


class Expiring(Protocol):
    """Something with a deadline: `expire()` is called once it has passed."""

    def expire(self) -> None: ...


class Deadlines:
    """Calls `expire()` on every entry still registered when its deadline passes.

    A timer of the event loop costs about as much as running a small step (a handle, a push onto
    the loop's heap, a cancel and, later, a sweep of the cancelled handles), and nearly every
    execution cancels its timer unused. So deadlines at least `exact_below` seconds away share
    one timer per `resolution`-long slice of time, and fire up to `resolution` late; shorter
    ones keep a timer of their own and fire on time.
    """

    def __init__(self, resolution: float = 0.01, exact_below: float = 0.5) -> None:
        if resolution <= 0 or exact_below < 0:
            raise ValueError("resolution must be positive and exact_below not negative")
        self.resolution, self.exact_below = resolution, exact_below
        self._slices: dict[int, dict[Expiring, None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, loop: asyncio.AbstractEventLoop, deadline: float, entry: Expiring) -> object:
        """Register `entry` to expire at loop time `deadline`; pass the token returned to `discard`."""
        if deadline - loop.time() < self.exact_below:
            return loop.call_at(deadline, entry.expire)
        if loop is not self._loop:  # slices belong to the loop whose timers serve them
            self._loop, self._slices = loop, {}
        key = math.ceil(deadline / self.resolution)
        members = self._slices.get(key)
        if members is None:
            members = self._slices[key] = {}
            loop.call_at(key * self.resolution, self._fire, key, members)
        members[entry] = None
        return members

    @staticmethod
    def discard(entry: Expiring, token: object) -> None:
        """Unregister `entry` (it finished in time); harmless once it has expired."""
        if type(token) is dict:
            token.pop(entry, None)
        else:
            token.cancel()  # type: ignore[attr-defined]

    def _fire(self, key: int, members: dict[Expiring, None]) -> None:
        if self._slices.get(key) is members:
            del self._slices[key]
        for entry in list(members):
            entry.expire()
        members.clear()

    def __len__(self) -> int:
        """Entries waiting on shared timers (those with timers of their own are not counted)."""
        return sum(len(members) for members in self._slices.values())
