"""One buffered output for every log line of the process: lines never interleave and the loop never waits on I/O.

Every handler appends whole lines to one in-memory buffer; one daemon thread writes it out every `interval`
(50 ms), at once when `flush_bytes` (64 KiB) are waiting, and on `flush()` (logging's shutdown and the
shutdown module's exit call it). A slow or blocked stdout stalls only that thread: once `capacity` bytes
wait, new lines are dropped and counted (`dropped`, exported as `log_lines_dropped_total`), so a log
reader that stops reading can never block or grow the server.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TextIO


class LogOutput:
    """A bounded line buffer written to a file descriptor by its own thread."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = 0.05,
        flush_bytes: int = 64 * 1024,
        capacity: int = 4 * 1024 * 1024,
    ) -> None:
        self.stream, self.interval, self.flush_bytes, self.capacity = stream, interval, flush_bytes, capacity
        self.dropped = 0  # lines refused because the buffer was full, or lost to a failed write
        self._lines: list[str] = []
        self._size = 0
        self._lock = threading.Lock()  # guards _lines and _size: any thread may log
        self._writing = threading.Lock()  # one writer at a time, so chunks leave in order
        self._full = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the writer thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._thread.start()

    def write(self, line: str) -> None:
        """Queue one complete line (ending in a newline); never blocks on I/O."""
        with self._lock:
            if self._size >= self.capacity:
                self.dropped += 1
                return
            self._lines.append(line)
            size = self._size = self._size + len(line)
        # Wake the writer once, when the buffer crosses the mark (Event.set costs a lock and a notify).
        if size >= self.flush_bytes and size - len(line) < self.flush_bytes:
            self._full.set()

    def flush(self) -> None:
        """Write out everything queued so far, on the calling thread."""
        with self._writing:
            with self._lock:
                lines, self._lines, self._size = self._lines, [], 0
            if lines:
                self._write_all("".join(lines).encode("utf-8", "backslashreplace"), len(lines))

    def close(self) -> None:
        """Write out what is queued and end the writer thread (a new setup_logging replaces this output)."""
        self._closed = True
        self._full.set()
        self.flush()

    def _run(self) -> None:
        while not self._closed:
            self._full.wait(self.interval)
            self._full.clear()
            self.flush()

    def _write_all(self, data: bytes, lines: int) -> None:
        try:
            fd = self.stream.fileno()
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:  # a non-blocking stdout that is full: wait here, off the loop
                    time.sleep(0.005)
        except (OSError, ValueError):  # closed or broken output: these lines are lost, and counted
            with self._lock:
                self.dropped += lines


class BufferedHandler(logging.Handler):
    """A logging handler that formats on the caller's thread and hands the line to a LogOutput."""

    def __init__(self, output: LogOutput) -> None:
        super().__init__()
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        """Format the record and queue its line."""
        try:
            self.output.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Write out what is queued (logging.shutdown and the exit paths call this)."""
        self.output.flush()
