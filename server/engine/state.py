"""The serving snapshot: a registry and the config compiled against it, and the lease that counts its executions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType

from ..config.loader import AppConfig
from ..hooks.registry import Registry


class Lease:
    """Counts the executions running on one State, so a retired version can wait for them.

    Used as `with state.lease:` by every caller that runs work on a state (the trigger and webhook
    handlers, the executor, queued jobs); it is its own context manager, so entering it allocates nothing.
    """

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    def __enter__(self) -> Lease:
        self.count += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no execution uses the state (any number of waiters share one event)."""
        while self.count:
            if self._idle is None or self._idle.is_set():
                self._idle = asyncio.Event()
            await self._idle.wait()


@dataclass(frozen=True, eq=False)
class State:
    """What serves requests: a registry and the config compiled against it, swapped as one reference."""

    registry: Registry
    config: AppConfig
    lease: Lease = field(default_factory=Lease)
