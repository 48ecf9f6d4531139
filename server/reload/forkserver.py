"""The isolation helper process: a fork server that runs each candidate component version in a child of its own.

Started by `server.reload.helper` (`python -c` calling `main()`). It is single-threaded, so `os.fork()` is
safe here, unlike in the server, which runs threads. It has imported `server` and the built-in plugins once,
and keeps one warmed-up child forked ahead (`candidate.run_spare`) so a request does not wait for a fork.
It multiplexes with `selectors` over the request pipe and every child's result pipe and exit, with a deadline
per child, so one hanging candidate never delays the answers for the others.

Protocol, both ways a 4-byte big-endian length then the payload (`candidate.frame`). The server sends
pickled dicts (it is the trusted side); the fork server answers JSON (it relays what children wrote, which
must never be unpickled):
- first `{"sys_path": [...], "preload": [...]}`, answered `{"ready": true, "pid": ..., "preload_failed": [...]}`;
- then per candidate `{"id": n, "source": Source, "document": LineDict | None, "config_source": str,
  "timeout": seconds, "memory": bytes}`, answered `{"id": n, "ok": true}` or
  `{"id": n, "ok": false, "error": reason, "line": int | None}`.
End of file on stdin (the server stopped, or died) kills the children and ends the fork server.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import selectors
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .candidate import (
    EXIT_INTERNAL,
    HEADER,
    cpu_limit,
    frame,
    load_libc,
    read_frame,
    run_candidate,
    run_spare,
    write_all,
)

MAX_RESULT = 64 * 1024  # a result longer than this is cut (a reason is a line, not a log)
SPARE_REQUEST_MAX = 60 * 1024  # a request a spare's pipe takes whole (the pipe buffer is 64 KiB)
# After an answer the next spare waits this long, so its warm-up does not compete for the CPU with the server,
# which is finishing that very reload.
SPARE_DELAY = 0.02


@dataclass(slots=True)
class Child:
    """One forked candidate: its pid, pipes, what it wrote so far and, once it has a request, its deadline."""

    pid: int
    result_fd: int
    exit_fd: int | None  # a pidfd, readable once the child exits (None: polled with waitpid)
    request_fd: int | None = None  # a spare's request pipe, until it gets its request
    request_id: int = 0
    deadline: float = float("inf")
    timeout: float = 0.0
    output: bytearray = field(default_factory=bytearray)
    answered: bool = False  # its result frame came (it is answered before it has finished exiting)


class ForkServer:
    """The loop: requests in, candidates forked (or handed to the spare), answers back."""

    def __init__(self, requests: int, answers: int) -> None:
        from server.hooks.manager import build_plugin_manager
        from server.hooks.registry import build_registry

        self.requests, self.answers = requests, answers
        self.selector = selectors.DefaultSelector()
        self.selector.register(requests, selectors.EVENT_READ, None)
        self.children: dict[int, Child] = {}
        self.spare: Child | None = None
        self.spare_due = 0.0
        self.warm: dict[str, Any] | None = None  # the last request's config, for the spare to compile
        self.inbox = bytearray()
        self.libc = load_libc()
        self.base = build_registry(build_plugin_manager(entry_points=False))

    def run(self) -> None:
        """Serve until the request pipe reaches end of file."""
        while True:
            for key, _ in self.selector.select(self._wait()):
                if key.data is None:
                    if not self._read_requests():
                        self._stop()
                        return
                else:
                    kind, child = key.data
                    if kind == "result":
                        self._read_result(child)
                    else:
                        self._exited(child)
            now = time.monotonic()
            for child in list(self.children.values()):
                if child.deadline <= now:
                    self._finish(child, timed_out=True)
                elif child.exit_fd is None:
                    pid, status = os.waitpid(child.pid, os.WNOHANG)
                    if pid:
                        self._finish(child, status=status)
            if self.spare is None and not self.children and now >= self.spare_due:
                self._fork_spare()

    def _wait(self) -> float | None:
        deadlines = [c.deadline for c in self.children.values()]
        if self.spare is None and not self.children:
            deadlines.append(self.spare_due)
        wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        if any(c.exit_fd is None for c in self.children.values()):  # without pidfds an exit is only polled
            wait = 0.005 if wait is None else min(wait, 0.005)
        return None if wait == float("inf") else wait

    def _read_requests(self) -> bool:
        data = os.read(self.requests, 1 << 16)
        if not data:
            return False
        self.inbox += data
        while len(self.inbox) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.inbox)
            if len(self.inbox) < HEADER.size + size:
                break
            payload = bytes(self.inbox[HEADER.size : HEADER.size + size])
            del self.inbox[: HEADER.size + size]
            self._start(payload)
        return True

    def _start(self, payload: bytes) -> None:
        request = pickle.loads(payload)
        self.warm = {"document": request["document"], "config_source": request["config_source"]}
        child = self._hand_to_spare(payload) or self._fork(request)
        child.request_id, child.timeout = request["id"], request["timeout"]
        child.deadline = time.monotonic() + child.timeout
        self.children[child.pid] = child

    def _hand_to_spare(self, payload: bytes) -> Child | None:
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        assert spare.request_fd is not None
        try:
            data = frame(payload)
            # A request the pipe would not take at once goes to a candidate forked with it in memory instead.
            if len(data) > SPARE_REQUEST_MAX or os.write(spare.request_fd, data) != len(data):
                raise BlockingIOError
        except OSError:  # too big, or the spare died: let it go and fork
            os.close(spare.request_fd)
            spare.request_fd = None
            self._finish(spare, answer=False)
            return None
        os.close(spare.request_fd)
        spare.request_fd = None
        return spare

    def _fork(self, request: dict[str, Any] | None) -> Child:
        """Fork a candidate for `request`, or a spare that waits for one (`request` None)."""
        read_fd, write_fd = os.pipe()
        request_read, request_write = os.pipe() if request is None else (-1, -1)
        pid = os.fork()
        if pid == 0:  # the candidate: never returns
            try:
                if request is None:
                    run_spare(request_read, write_fd, self.base, self.libc, self.warm)
                else:
                    run_candidate(request, write_fd, self.base, self.libc)
            finally:
                os._exit(EXIT_INTERNAL)
        for fd in (write_fd, request_read):
            if fd >= 0:
                os.close(fd)
        os.set_blocking(read_fd, False)
        if request_write >= 0:
            os.set_blocking(request_write, False)
        try:
            exit_fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux 5.3+: polled
            exit_fd = None
        child = Child(pid, read_fd, exit_fd, request_write if request_write >= 0 else None)
        self.selector.register(read_fd, selectors.EVENT_READ, ("result", child))
        if exit_fd is not None:
            self.selector.register(exit_fd, selectors.EVENT_READ, ("exit", child))
        return child

    def _fork_spare(self) -> None:
        self.spare = self._fork(None)

    def _exited(self, child: Child) -> None:
        if child is self.spare:  # a spare that died before it got a request: fork another later
            self.spare = None
            self._finish(child, answer=False)
        else:
            self._finish(child)

    def _read_result(self, child: Child) -> None:
        try:
            chunk = os.read(child.result_fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:  # the child closed its end; its exit (or the deadline) settles it
            if child.result_fd in self.selector.get_map():
                self.selector.unregister(child.result_fd)
            return
        if len(child.output) < MAX_RESULT:
            child.output += chunk[: MAX_RESULT - len(child.output)]
        result = _parse_result(child.output)
        if result is not None and not child.answered and child is not self.spare:
            # Answer now: tearing down the process takes another millisecond or so, and the verdict is final.
            self._answer(child, result)

    def _finish(self, child: Child, *, timed_out: bool = False, status: int | None = None, answer: bool = True) -> None:
        """Settle a child that exited or ran out of time: kill what is left of it, reap it, answer."""
        # The whole process group (whatever the candidate forked) goes before the leader is reaped: until
        # then its pid, which is the group's id, cannot be reused by an unrelated process.
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(child.pid, signal.SIGKILL)
        if status is None:
            status = os.waitpid(child.pid, 0)[1]
        self._read_result(child)
        for fd in (child.result_fd, child.exit_fd, child.request_fd):
            if fd is not None:
                if fd in self.selector.get_map():
                    self.selector.unregister(fd)
                os.close(fd)
        self.children.pop(child.pid, None)
        self.spare_due = time.monotonic() + SPARE_DELAY
        if answer and not child.answered:
            reason = (
                f"import did not finish in {child.timeout:g} s"
                if timed_out
                else reason_for_status(status, cpu_limit(child.timeout))
            )
            self._answer(child, {"ok": False, "error": reason, "line": None})

    def _answer(self, child: Child, result: dict[str, Any]) -> None:
        child.answered = True
        write_all(self.answers, frame(json.dumps({"id": child.request_id, **result}).encode()))

    def _stop(self) -> None:
        for child in list(self.children.values()):
            self._finish(child, timed_out=True, answer=False)
        if self.spare is not None:
            self._finish(self.spare, answer=False)


def reason_for_status(status: int, cpu_seconds: int) -> str:
    """Why a candidate that wrote no result ended: its signal or exit code."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU:
            return f"import used more than {cpu_seconds} s of CPU"
        name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
        return f"import crashed the candidate process ({name}, signal {number})"
    code = os.waitstatus_to_exitcode(status)
    if code == EXIT_INTERNAL:
        return "the candidate process failed before it could report"
    return f"import exited the candidate process with code {code}"


def _parse_result(output: bytes | bytearray) -> dict[str, Any] | None:
    """The child's result, once its whole frame has come (the child ran the component's code: check its shape)."""
    if len(output) < HEADER.size:
        return None
    (size,) = HEADER.unpack_from(output)
    if len(output) < HEADER.size + size:
        return None
    try:
        result = json.loads(output[HEADER.size : HEADER.size + size])
    except ValueError:
        return None
    if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
        return None
    line = result.get("line")
    return {
        "ok": result["ok"],
        "error": str(result.get("error", "")),
        "line": line if isinstance(line, int) and not isinstance(line, bool) else None,
    }


def main() -> int:
    """Entry point of the fork server process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it stops us through stdin
    # The protocol keeps private copies of stdin and stdout; fds 0 and 1 become /dev/null and stderr, so a
    # stray print from an import can never corrupt a frame.
    requests, answers = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    started = time.monotonic()
    hello = read_frame(requests)
    if hello is None:
        return 0
    init = pickle.loads(hello)
    sys.path[:] = init["sys_path"]
    server = ForkServer(requests, answers)
    failed = []
    for name in init["preload"]:
        try:
            __import__(name)
        except BaseException as exc:  # a preload is an optimisation: report it, carry on without it
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    gc.collect()
    gc.freeze()  # children never scan (and so never copy) the objects already loaded
    write_all(
        answers,
        frame(
            json.dumps(
                {
                    "ready": True,
                    "pid": os.getpid(),
                    "preload_failed": failed,
                    "seconds": round(time.monotonic() - started, 3),
                }
            ).encode()
        ),
    )
    server.run()
    return 0
