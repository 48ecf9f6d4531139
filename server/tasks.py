"""Stopping background tasks reliably, even when a library swallows their cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

# How long a cancelled task gets to end before it is cancelled again: long enough for a `finally` that settles
# a store call, short enough that a swallowed cancellation costs a shutdown little.
RECANCEL_SECONDS = 0.5


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again any that carried on.

    A plain `task.cancel(); await task` can wait forever on Python 3.11: its `asyncio.wait_for`, which
    aiopg and other libraries call, returns the inner result and drops the cancellation when the two
    arrive together, so a loop such as `while True: await store.query(); await asyncio.sleep(5)` runs
    on. Cancelling again until the task is done ends it at its next await.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
    # Every task is done: this only collects outcomes, so that none is reported as never retrieved.
    await asyncio.gather(*tasks, return_exceptions=True)
