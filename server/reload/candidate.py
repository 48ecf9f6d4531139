"""The isolation helper process: forks one disposable child per candidate component version and reports on it.

Run as `python -m server.reload.candidate` by `server.reload.isolation`, never imported for its side effects.
The helper is single-threaded (so `os.fork()` is safe here, unlike in the server, which runs threads), has
imported `server` and the built-in plugins once, and multiplexes with `selectors` over the request pipe
and each child's result pipe and exit, so one hanging child never delays the answers for the others.

Protocol, both ways a 4-byte big-endian length then the payload: the server sends pickled dicts (it is the
trusted side); the helper answers JSON objects (it relays what children wrote, which must not be unpickled).
- first the server sends `{"sys_path": [...], "preload": [...]}`; the helper answers `{"ready": true, ...}`;
- then `{"id": n, "source": Source, "document": LineDict | None, "config_source": str, "timeout": s,
  "memory": bytes}` per candidate; the answer is `{"id": n, "ok": true}` or `{"id": n, "ok": false,
  "error": reason, "line": int | None}`.
End of file on stdin (the server stopped, or was killed) kills the children and ends the helper.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import pickle
import resource
import selectors
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

HEADER = struct.Struct(">I")
MAX_RESULT = 64 * 1024  # a result longer than this is cut (a reason is a line, not a log)
EXIT_INTERNAL = 70  # the child failed before it could report (EX_SOFTWARE)
PR_SET_PDEATHSIG = 1


def frame(payload: bytes) -> bytes:
    """One protocol frame: the payload's length, then the payload."""
    return HEADER.pack(len(payload)) + payload


def reason_for_status(status: int, cpu_seconds: int) -> str:
    """Why a child that wrote no result ended: its signal or exit code."""
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


def cpu_limit(timeout: float) -> int:
    """CPU seconds a candidate may use: a backstop under the wall-clock deadline (threads can burn both CPUs)."""
    return int(timeout) + 2


@dataclass(slots=True)
class Child:
    """One forked candidate: its pid, its result pipe, what it wrote so far and its deadline."""

    request_id: int
    pid: int
    result_fd: int
    exit_fd: int | None  # a pidfd, readable once the child exits (None: poll with waitpid)
    deadline: float
    timeout: float
    output: bytearray = field(default_factory=bytearray)


class Helper:
    """The helper's loop: requests in, children out, answers back."""

    def __init__(self, requests: int, answers: int) -> None:
        self.requests, self.answers = requests, answers
        self.selector = selectors.DefaultSelector()
        self.selector.register(requests, selectors.EVENT_READ, None)
        self.children: dict[int, Child] = {}
        self.inbox = bytearray()
        self.libc = _libc()
        from server.hooks.manager import build_plugin_manager
        from server.hooks.registry import build_registry

        self.base = build_registry(build_plugin_manager(entry_points=False))

    def run(self) -> None:
        """Serve until the request pipe reaches end of file."""
        while True:
            for key, _ in self.selector.select(self._wait()):
                if key.data is None:
                    if not self._read_requests():
                        self._stop_children()
                        return
                else:
                    kind, child = key.data
                    if kind == "result":
                        self._read_result(child)
                    else:
                        self._finish(child)
            now = time.monotonic()
            for child in list(self.children.values()):
                if child.deadline <= now:
                    self._finish(child, timed_out=True)
                elif child.exit_fd is None:
                    pid, status = os.waitpid(child.pid, os.WNOHANG)
                    if pid:
                        self._finish(child, status=status)

    def _wait(self) -> float | None:
        if not self.children:
            return None
        wait = max(0.0, min(c.deadline for c in self.children.values()) - time.monotonic())
        # Without pidfds an exit is only seen by polling.
        return min(wait, 0.005) if any(c.exit_fd is None for c in self.children.values()) else wait

    def _read_requests(self) -> bool:
        data = os.read(self.requests, 1 << 16)
        if not data:
            return False
        self.inbox += data
        while len(self.inbox) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.inbox)
            if len(self.inbox) < HEADER.size + size:
                break
            request = pickle.loads(self.inbox[HEADER.size:HEADER.size + size])
            del self.inbox[:HEADER.size + size]
            self._start(request)
        return True

    def _start(self, request: dict[str, Any]) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the candidate: never returns
            try:
                run_candidate(request, write_fd, self.base, self.libc)
            finally:
                os._exit(EXIT_INTERNAL)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        try:
            exit_fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux 5.3+: poll
            exit_fd = None
        timeout = request["timeout"]
        child = Child(request["id"], pid, read_fd, exit_fd, time.monotonic() + timeout, timeout)
        self.children[pid] = child
        self.selector.register(read_fd, selectors.EVENT_READ, ("result", child))
        if exit_fd is not None:
            self.selector.register(exit_fd, selectors.EVENT_READ, ("exit", child))

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
            child.output += chunk[:MAX_RESULT - len(child.output)]

    def _finish(self, child: Child, *, timed_out: bool = False, status: int | None = None) -> None:
        """Settle a child that exited or ran out of time: kill what is left of it, reap it, answer."""
        # Kill the whole process group (whatever the candidate forked) before reaping the leader: until it is
        # reaped its pid, which is the group's id, cannot be reused by an unrelated process.
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(child.pid, signal.SIGKILL)
        if status is None:
            status = os.waitpid(child.pid, 0)[1]
        self._read_result(child)
        for fd in (child.result_fd, child.exit_fd):
            if fd is not None:
                if fd in self.selector.get_map():
                    self.selector.unregister(fd)
                os.close(fd)
        del self.children[child.pid]
        result = None if timed_out or status != 0 else _parse_result(child.output)
        if result is None:
            reason = (f"import did not finish in {child.timeout:g} s" if timed_out
                      else reason_for_status(status, cpu_limit(child.timeout)))
            result = {"ok": False, "error": reason, "line": None}
        answer = {"id": child.request_id, **result}
        _write_all(self.answers, frame(json.dumps(answer).encode()))

    def _stop_children(self) -> None:
        for child in list(self.children.values()):
            self._finish(child, timed_out=True)


def _parse_result(output: bytes) -> dict[str, Any] | None:
    """What the child wrote, if it is a result (the child runs the component's code, so check its shape)."""
    try:
        result = json.loads(output)
    except ValueError:
        return None
    if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
        return None
    line = result.get("line")
    return {"ok": result["ok"], "error": str(result.get("error", "")),
            "line": line if isinstance(line, int) and not isinstance(line, bool) else None}


def run_candidate(request: dict[str, Any], result_fd: int, base: Any, libc: Any) -> None:
    """In the forked child: confine the process, load the version, write the verdict to fd 3 and exit."""
    os.setsid()  # its own process group: the helper kills it and everything it forks at once
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a SIGKILLed helper takes its children along
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # prints go nowhere, never into the helper's protocol pipe
        os.dup2(null, fd)
    os.dup2(result_fd, 3)
    os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])  # nothing else is inherited
    cpu = cpu_limit(request["timeout"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a segfault writes no core file
    if request["memory"]:
        limit = _address_space() + request["memory"]
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    reserve = bytearray(1 << 16)  # freed to report a MemoryError once the component has used up the rest
    try:
        result = _check(request, base)
    except BaseException as exc:  # the loader catches everything a component raises; this is the last resort
        del reserve
        result = {"ok": False, "error": f"the candidate failed: {type(exc).__name__}", "line": None}
    _write_all(3, json.dumps(result).encode())
    os._exit(0)


def _check(request: dict[str, Any], base: Any) -> dict[str, Any]:
    from server.errors import ComponentError
    from server.hooks.registry import compose_registry
    from server.reload.loader import build_module, collect, compile_with

    source = request["source"]
    try:
        component = collect(build_module(source), source, base)
        if request["document"] is not None:
            registry = compose_registry(base, (component.steps, component.endpoints))
            try:
                compile_with(request["document"], registry, config_source=request["config_source"], source=source)
            except ComponentError:
                # Only what this version breaks counts: a config that fails here without it too (other
                # components' steps are missing here) is for the server's own compile to judge.
                try:
                    compile_with(request["document"], base, config_source=request["config_source"], source=source)
                except ComponentError:
                    return {"ok": True}
                raise
    except ComponentError as exc:
        if "MemoryError" in exc.reason:
            megabytes = request["memory"] // (1 << 20)
            return {"ok": False, "error": f"{exc.reason} (a candidate may allocate {megabytes} MB)",
                    "line": exc.details.get("line")}
        return {"ok": False, "error": exc.reason, "line": exc.details.get("line")}
    return {"ok": True}


def _address_space() -> int:
    """The process's current virtual size in bytes (the memory limit is on top of it)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _libc() -> Any:
    """libc for prctl on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_frame(fd: int) -> bytes | None:
    """One frame from a blocking fd, or None at end of file."""
    def exactly(size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    header = exactly(HEADER.size)
    return None if header is None else exactly(HEADER.unpack(header)[0])


def main() -> int:
    """Entry point of the helper process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it stops us through stdin
    # The protocol keeps private copies of stdin and stdout; fds 0 and 1 become /dev/null and stderr, so a
    # stray print from an import can never corrupt a frame.
    requests, answers = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    started = time.monotonic()
    hello = _read_frame(requests)
    if hello is None:
        return 0
    init = pickle.loads(hello)
    sys.path[:] = init["sys_path"]
    helper = Helper(requests, answers)
    failed = []
    for name in init["preload"]:
        try:
            __import__(name)
        except BaseException as exc:  # a preload is an optimisation: report it, carry on without it
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    gc.collect()
    gc.freeze()  # children never touch (and so never copy) the pages of what is already loaded
    _write_all(answers, frame(json.dumps({"ready": True, "pid": os.getpid(), "preload_failed": failed,
                                          "seconds": round(time.monotonic() - started, 3)}).encode()))
    helper.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
