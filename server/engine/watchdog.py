"""Measure how late the event loop runs a periodic timer, and name the code that blocks it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .stacks import culprit, describe, thread_frame

log = logging.getLogger("workflow.loop")

INTERVAL = 0.1  # the timer's period, so a lag is measured to within 100 ms
THRESHOLD = 0.5  # a lag above this makes the `loop` health check degraded...
WINDOW = 60.0  # ...for this many seconds after it
STALL = 0.5  # a loop silent this long (the threshold again) gets one warning naming the code that holds it


@dataclass(frozen=True, slots=True)
class Stall:
    """A blocked loop the watcher thread noticed: where the loop's thread was, and when."""

    where: str
    noticed: float  # time.monotonic()


class LoopWatchdog:
    """Times a callback every `interval`; a daemon thread warns once per stall with the loop thread's stack.

    `observe(lag)` gets each measured lag and `report_max(worst)` the worst of the last `window` seconds;
    both run on the loop's thread.
    """

    def __init__(
        self,
        observe: Callable[[float], None] = lambda lag: None,
        report_max: Callable[[float], None] = lambda worst: None,
        *,
        interval: float = INTERVAL,
        threshold: float = THRESHOLD,
        window: float = WINDOW,
        stall_after: float = STALL,
    ) -> None:
        self.interval, self.threshold, self.window, self.stall_after = interval, threshold, window, stall_after
        self._observe, self._report_max = observe, report_max
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._recent: deque[tuple[int, float]] = deque()  # (whole second, worst lag in it), oldest first
        # Shared with the watcher thread: plain attribute reads and writes, each atomic under the GIL.
        self._ticks = 0
        self._last_tick = 0.0
        self._loop_thread = 0
        self._stall: Stall | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start timing `loop` (call on its thread) and start the watcher thread."""
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._last_tick = time.monotonic()
        self._due = loop.time() + self.interval
        self._timer = loop.call_at(self._due, self._tick)
        self._stopped.clear()
        self._thread = threading.Thread(target=self._watch, name="workflow-loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer and the watcher thread (it is a daemon: never waited for long)."""
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        self._thread = None

    def worst(self) -> float:
        """The worst lag of the last `window` seconds, including the timer's current delay if it is overdue."""
        if self._loop is None:
            return 0.0
        now = self._loop.time()
        self._forget(now)
        overdue = now - self._due if self._timer is not None else 0.0
        return max(overdue, max((lag for _, lag in self._recent), default=0.0))

    def health(self) -> dict[str, Any]:
        """The `loop` check of /healthz: degraded while a lag above the threshold is within the window."""
        worst = self.worst()
        check: dict[str, Any] = {
            "status": "degraded" if worst > self.threshold else "ok",
            "max_lag_seconds": round(worst, 3),
            "threshold_seconds": self.threshold,
            "window_seconds": self.window,
        }
        stall = self._stall
        if stall is not None and time.monotonic() - stall.noticed <= self.window:
            check["blocked_at"] = stall.where
        return check

    def _tick(self) -> None:
        loop = self._loop
        if loop is None or self._timer is None:
            return
        now = loop.time()
        lag = max(0.0, now - self._due)
        self._ticks += 1
        self._last_tick = time.monotonic()
        self._observe(lag)
        second = int(now)
        if self._recent and self._recent[-1][0] == second:
            if lag > self._recent[-1][1]:
                self._recent[-1] = (second, lag)
        else:
            self._recent.append((second, lag))
        self._forget(now)
        self._report_max(max(worst for _, worst in self._recent))
        stall = self._stall
        if lag >= self.stall_after and stall is not None and self._last_tick - stall.noticed < lag:
            log.info(
                "event loop runs again after %.2fs blocked at %s",
                lag,
                stall.where,
                extra={"lag_seconds": round(lag, 3), "blocked_at": stall.where},
            )
        self._due = now + self.interval
        self._timer = loop.call_at(self._due, self._tick)

    def _forget(self, now: float) -> None:
        """Drop the seconds that ended more than `window` ago: a lag is kept `window` to `window + 1` s."""
        oldest = now - self.window
        while self._recent and self._recent[0][0] + 1 <= oldest:
            self._recent.popleft()

    def _watch(self) -> None:
        """The watcher thread: one warning per stall, while the loop cannot report anything itself."""
        warned_at = -1
        while not self._stopped.wait(self.interval):
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            if not loop.is_running():  # between a test's loop runs, say: nothing is blocked
                continue
            ticks = self._ticks
            silent = time.monotonic() - self._last_tick
            if silent < self.stall_after or ticks == warned_at:
                continue
            warned_at = ticks
            frame = thread_frame(self._loop_thread)
            if frame is None:
                continue
            stack = describe(frame)
            self._stall = Stall(culprit(frame), time.monotonic())
            log.warning(
                "event loop blocked for %.1fs so far, at %s",
                silent,
                self._stall.where,
                extra={"blocked_at": self._stall.where, "stack": list(stack)},
            )
