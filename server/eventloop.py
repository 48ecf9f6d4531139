"""The event loop the server runs on: uvloop when it is installed (the default), else asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib import metadata

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> tuple[LoopFactory | None, str]:
    """The loop factory for asyncio.Runner (None: asyncio's default) and its name for the log.

    `choice` is WORKFLOW_EVENT_LOOP: `auto` takes uvloop when it imports and falls back to asyncio's loop
    (a platform without a uvloop wheel), `uvloop` insists on it, `asyncio` never uses it.
    """
    if choice == "asyncio":
        return None, "asyncio"
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError("WORKFLOW_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return None, "asyncio (uvloop is not installed)"
    return uvloop.new_event_loop, f"uvloop {metadata.version('uvloop')}"
