"""SIGTERM and SIGINT end the process within the shutdown timeout, whatever code is stuck in it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from .engine.stacks import culprit, thread_frame

log = logging.getLogger("workflow.server")

GRACE = 1.0  # past the shutdown timeout, for the last cleanup steps, before the process ends regardless
THREAD_EXIT_WAIT = 0.5  # how long idle worker threads get to notice the shutdown and leave
FORCED_EXIT_CODE = 1  # the drain was cut short: in-flight work may be lost, and the exit status says so


class StopSignals:
    """Turns the first SIGTERM or SIGINT into `stop()` on the loop, and arms a deadline no code can hold up.

    Python runs a signal handler in the main thread between two bytecodes, even while blocking code holds
    the event loop, where `loop.add_signal_handler` would wait for the loop. So the deadline is armed even
    then, and a daemon thread ends the process at `timeout + GRACE` if it is still alive.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None], timeout: float) -> None:
        self._loop, self._stop, self.timeout = loop, stop, timeout
        self._deadline: float | None = None
        self._armed = threading.Event()
        self._loop_thread = threading.get_ident()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on (call on the main thread); start the deadline's thread."""
        # Started here, not in the handler: starting a thread there could deadlock on threading's own lock.
        threading.Thread(target=self._enforce, name="workflow-shutdown-deadline", daemon=True).start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._deadline is None:  # the first signal arms the deadline; later ones change nothing
            self._deadline = time.monotonic() + self.timeout + GRACE
            self._armed.set()
        with contextlib.suppress(RuntimeError):  # a closed loop: shutdown is past the drain already
            self._loop.call_soon_threadsafe(self._stop)

    def _enforce(self) -> None:
        """The deadline's thread: sleeps until a signal arms it, then until the deadline."""
        self._armed.wait()
        time.sleep(max(0.0, (self._deadline or 0.0) - time.monotonic()))
        frame = thread_frame(self._loop_thread)
        where = culprit(frame) if frame is not None else "an unknown place"
        _exit(
            FORCED_EXIT_CODE,
            logging.ERROR,
            "shutdown did not finish within %gs (the loop's thread is at %s): exiting now",
            self.timeout + GRACE,
            where,
        )


def exit_if_threads_remain() -> None:
    """After a completed drain: end the process at once if threads nobody can stop would keep it alive.

    Interpreter exit joins every non-daemon thread, and a step thread in `while True: pass` never ends;
    the drain is done, so nothing is lost by leaving without it.
    """
    waited_until = time.monotonic() + THREAD_EXIT_WAIT
    for thread in _others():
        thread.join(max(0.0, waited_until - time.monotonic()))
    stuck = [t for t in _others() if t.is_alive()]
    if not stuck:
        return
    names = ", ".join(
        f"{t.name} at {culprit(f) if (f := thread_frame(t.ident or 0)) else 'an unknown place'}" for t in stuck
    )
    _exit(0, logging.WARNING, "exiting without %d stuck thread(s): %s", len(stuck), names)


def _others() -> list[threading.Thread]:
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]


def _exit(code: int, level: int, message: str, *args: object) -> None:
    """Log one line, flush the log handlers, and end the process without waiting for any thread."""
    # A handler blocked on a full pipe must not hold the exit up: a second timer ends it regardless.
    backstop = threading.Timer(GRACE, os._exit, (code,))
    backstop.daemon = True
    backstop.start()
    log.log(level, message, *args)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(code)
