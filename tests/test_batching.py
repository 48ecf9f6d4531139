"""The queue's call coalescer (server/queue/batching.py): failures reach every caller at once."""

from __future__ import annotations

import asyncio

from server.errors import QueueUnavailable
from server.queue.batching import BATCH, Coalescer


async def test_calls_waiting_behind_a_failed_batch_fail_with_it_instead_of_waiting_their_turn() -> None:
    sent: list[int] = []

    async def unreachable(calls: list[tuple[str, ...]]) -> list[int]:
        sent.append(len(calls))
        await asyncio.sleep(0.05)  # the queue's timeout, here short
        raise QueueUnavailable("the queue cannot be reached: timed out")

    coalescer = Coalescer(unreachable)
    callers = [asyncio.create_task(coalescer((str(n),))) for n in range(5 * BATCH)]
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert sent == [BATCH]  # one batch went out; the other 4 x BATCH callers did not wait a timeout each
    assert {type(o) for o in outcomes} == {QueueUnavailable}
    assert {str(o) for o in outcomes} == {"the queue cannot be reached: timed out"}
