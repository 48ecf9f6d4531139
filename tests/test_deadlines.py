"""Shared deadline timers: never early, late by at most one slice, and silent once discarded."""

from __future__ import annotations

import asyncio

import pytest

from server.engine.deadlines import Deadlines


class Entry:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.expired_at: float | None = None

    def expire(self) -> None:
        assert self.expired_at is None, "expired twice"
        self.expired_at = self.loop.time()


async def test_shared_slice_fires_after_the_deadline_within_one_resolution() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=0.05, exact_below=0.1)
    start = loop.time()
    entries = [(Entry(loop), start + 0.2 + i * 0.001) for i in range(20)]
    for entry, deadline in entries:
        assert not isinstance(deadlines.add(loop, deadline, entry), asyncio.TimerHandle)  # a shared slice
    assert len(deadlines) == 20
    assert deadlines.timers in (1, 2)  # deadlines 19 ms apart at most: one slice, or two across a boundary
    await asyncio.sleep(0.35)
    for entry, deadline in entries:
        assert entry.expired_at is not None
        assert deadline <= entry.expired_at <= deadline + 0.05 + 0.03  # a slice late at most, plus scheduling
    assert len(deadlines) == 0 and deadlines.timers == 0


async def test_long_deadlines_do_not_pile_up_timers() -> None:
    # Hour-long deadlines must not leave a pending timer per slice on the loop for the whole hour.
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=0.01, exact_below=0.0, max_timers=10)
    entries = [Entry(loop) for _ in range(60)]
    tokens = [deadlines.add(loop, loop.time() + 3600 + i * 0.004, e) for i, e in enumerate(entries)]
    assert 10 < deadlines.timers < 60  # shared (several entries per slice); none idle, so none swept
    for entry, token in zip(entries, tokens, strict=True):
        deadlines.discard(entry, token)
    swept = [shared.timer for shared in deadlines._slices.values()]
    late = Entry(loop)
    deadlines.add(loop, loop.time() + 7200, late)  # a new slice past the bound: the idle ones go
    assert deadlines.timers == 1 and len(deadlines) == 1
    assert all(timer is not None and timer.cancelled() for timer in swept)
    assert all(entry.expired_at is None for entry in entries)


async def test_short_deadlines_keep_an_exact_timer() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=10.0, exact_below=1.0)  # a shared slice would fire seconds late
    entry = Entry(loop)
    deadline = loop.time() + 0.05
    token = deadlines.add(loop, deadline, entry)
    assert isinstance(token, asyncio.TimerHandle)
    await asyncio.sleep(0.1)
    assert entry.expired_at is not None and deadline <= entry.expired_at < deadline + 0.04


@pytest.mark.parametrize("exact_below", [0.0, 10.0], ids=["shared", "exact"])
async def test_a_discarded_entry_never_expires(exact_below: float) -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(resolution=0.02, exact_below=exact_below)
    kept, dropped = Entry(loop), Entry(loop)
    deadline = loop.time() + 0.05
    deadlines.add(loop, deadline, kept)
    deadlines.discard(dropped, deadlines.add(loop, deadline, dropped))
    await asyncio.sleep(0.12)
    assert kept.expired_at is not None
    assert dropped.expired_at is None
    deadlines.discard(
        kept, deadlines.add(loop, loop.time() + 5, kept) if exact_below == 0 else loop.call_later(5, kept.expire)
    )  # discarding after expiry is harmless too


def test_each_event_loop_gets_its_own_slices() -> None:
    deadlines = Deadlines(resolution=0.02, exact_below=0.0)
    fired: list[str] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def expire(self) -> None:
            fired.append(self.name)

    async def run(name: str) -> None:
        loop = asyncio.get_running_loop()
        deadlines.add(loop, loop.time() + 0.03, Named(name))
        await asyncio.sleep(0.08)

    asyncio.run(run("first"))
    asyncio.run(run("second"))  # a new loop: the first loop's slices must not swallow its entry
    assert fired == ["first", "second"]


def test_bad_arguments_are_refused() -> None:
    refused = "resolution and max_timers must be positive, exact_below not negative"
    with pytest.raises(ValueError, match=refused):
        Deadlines(resolution=0)
    with pytest.raises(ValueError, match=refused):
        Deadlines(exact_below=-1)
    with pytest.raises(ValueError, match=refused):
        Deadlines(max_timers=0)
