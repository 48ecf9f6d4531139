"""The loop watchdog on the test's own event loop: lag, health, the window, one warning per stall."""

from __future__ import annotations

import asyncio
import logging
import time

from server.engine.watchdog import LoopWatchdog
from tests.conftest import until

BLOCKING_LINE = 26  # the time.sleep below


async def test_a_stall_is_measured_reported_once_and_forgotten_after_the_window(caplog):
    lags: list[float] = []
    worst: list[float] = []
    watchdog = LoopWatchdog(lags.append, worst.append, interval=0.1, threshold=0.5, window=2.0, stall_after=0.3)
    watchdog.start(asyncio.get_running_loop())
    try:
        await until(lambda: len(lags) >= 3)
        health = watchdog.health()
        assert health.pop("max_lag_seconds") < 0.5
        assert health == {"status": "ok", "threshold_seconds": 0.5, "window_seconds": 2.0}
        with caplog.at_level(logging.INFO, logger="workflow.loop"):
            time.sleep(1.0)  # noqa: ASYNC251  (blocks the loop on purpose: its timer runs at least 0.9 s late)
            unblocked = time.monotonic()
            await until(lambda: max(lags) >= 0.9)
        health = watchdog.health()
        assert health["status"] == "degraded"
        assert 0.9 <= health["max_lag_seconds"] < 5
        test_name = test_a_stall_is_measured_reported_once_and_forgotten_after_the_window.__name__
        assert health["blocked_at"] == f"{__file__}:{BLOCKING_LINE} in {test_name}"
        assert 0.9 <= worst[-1] == max(lags) < 5
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # once per stall, though the watcher looked about seven times
        assert warnings[0].blocked_at == health["blocked_at"]
        assert warnings[0].stack[-1] == health["blocked_at"]
        [info] = [r for r in caplog.records if r.levelno == logging.INFO]
        assert info.blocked_at == health["blocked_at"]
        # The stall stays in view for the whole window, then leaves it.
        await until(lambda: watchdog.health()["status"] == "ok" and worst[-1] < 0.5, timeout=10)
        assert 2.0 <= time.monotonic() - unblocked < 10
        assert "blocked_at" not in watchdog.health()
    finally:
        watchdog.stop()
    assert watchdog.health()["max_lag_seconds"] < 0.5
