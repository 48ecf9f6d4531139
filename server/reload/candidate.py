"""Inside one forked candidate process: confine it, load the component version, write the verdict, exit.

The fork server (`server.reload.forkserver`) forks these. A candidate never returns to its caller: it ends
with `os._exit`. Also the pipe framing that the fork server and its client (`server.reload.helper`) share.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import pickle
import resource
import signal
import struct
import sys
from typing import Any

HEADER = struct.Struct(">I")
EXIT_INTERNAL = 70  # the candidate failed before it could report (EX_SOFTWARE)
PR_SET_PDEATHSIG = 1
RESULT_FD, REQUEST_FD = 3, 4
WARM_UP = """\
from server import hookimpl


async def isolation_warm_up(ctx):
    return {}


@hookimpl
def register_steps(register):
    register("step.isolation_warm_up", isolation_warm_up)
"""


def frame(payload: bytes) -> bytes:
    """One protocol frame: the payload's length, then the payload."""
    return HEADER.pack(len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to a blocking fd."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int) -> bytes | None:
    """One frame from a blocking fd, or None at end of file."""
    header = _read_exactly(fd, HEADER.size)
    return None if header is None else _read_exactly(fd, HEADER.unpack(header)[0])


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def cpu_limit(timeout: float) -> int:
    """CPU seconds a candidate may use: a backstop under the wall-clock deadline (threads can burn both CPUs)."""
    return int(timeout) + 2


def run_candidate(request: dict[str, Any], result_fd: int, base: Any, libc: Any) -> None:
    """A candidate forked for `request`: confine, check, report on fd 3, exit."""
    _confine(libc, {result_fd: RESULT_FD})
    _finish(request, base)


def run_spare(request_fd: int, result_fd: int, base: Any, libc: Any, warm: dict[str, Any] | None) -> None:
    """A candidate forked ahead of its request: confine and warm up, then wait for the request on fd 4.

    Forked processes copy each memory page the first time they write it (reference counts make every object
    they touch written); loading a small built-in component and compiling the last config now, before the
    request, makes those copies while nobody waits.
    """
    _confine(libc, {result_fd: RESULT_FD, request_fd: REQUEST_FD})
    with contextlib.suppress(BaseException):  # a warm-up is only an optimisation
        _check(
            {
                "source": _warm_up_source(),
                "document": (warm or {}).get("document"),
                "config_source": (warm or {}).get("config_source", ""),
                "memory": 0,
            },
            base,
        )
    payload = read_frame(REQUEST_FD)
    if payload is None:  # the fork server let this spare go
        os._exit(0)
    os.close(REQUEST_FD)
    _finish(pickle.loads(payload), base)


def _confine(libc: Any, keep: dict[int, int]) -> None:
    """Own process group, dies with the fork server, stdio on /dev/null, only the `keep` fds (renumbered)."""
    os.setsid()  # its own process group: the fork server kills it and everything it forks at once
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a SIGKILLed fork server takes its candidates along
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # prints go nowhere, never into the fork server's protocol pipe
        os.dup2(null, fd)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # Copies above the targets first: a kept fd may itself be numbered 3 or 4.
    lifted = {fcntl.fcntl(fd, fcntl.F_DUPFD, min(64, limit - len(keep))): target for fd, target in keep.items()}
    for fd, target in lifted.items():
        os.dup2(fd, target)
    os.closerange(max(keep.values()) + 1, _highest_fd(limit) + 1)  # nothing else is inherited


def _finish(request: dict[str, Any], base: Any) -> None:
    """Limit the process for `request`, check the version, write the verdict to fd 3 and exit."""
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
    write_all(RESULT_FD, frame(json.dumps(result).encode()))  # framed: complete before the process has gone
    os._exit(0)


def _check(request: dict[str, Any], base: Any) -> dict[str, Any]:
    """Import the version, call its register hooks and compile the config against it: the verdict."""
    from server.errors import ComponentError
    from server.hooks.registry import compose_registry
    from server.reload.loader import build_module, collect, compile_with

    source = request["source"]
    try:
        component = collect(build_module(source), source, base)
        if request["document"] is not None:
            registry = compose_registry(base, (component.steps, component.endpoints))
            compile_with(request["document"], registry, config_source=request["config_source"], source=source)
    except ComponentError as exc:
        if exc.reason.startswith("the config does not compile") and not _compiles(request, base):
            # Only what this version breaks counts: a config that fails here without it too (the step types
            # of other components are missing here) is for the server's own compile to judge.
            return {"ok": True}
        reason = exc.reason
        if "MemoryError" in reason:
            reason += f" (a candidate may allocate {request['memory'] >> 20} MB)"
        return {"ok": False, "error": reason, "line": exc.details.get("line")}
    return {"ok": True}


def _compiles(request: dict[str, Any], base: Any) -> bool:
    from server.errors import ComponentError
    from server.reload.loader import compile_with

    try:
        compile_with(request["document"], base, config_source=request["config_source"], source=request["source"])
    except ComponentError:
        return False
    return True


def _warm_up_source() -> Any:
    from server.reload.loader import Source

    return Source.from_text("isolation_warm_up", "<isolation warm-up>", WARM_UP)


def load_libc() -> Any:
    """libc, for prctl, on Linux; else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _highest_fd(limit: int) -> int:
    """The highest open fd: closing up to it, not to a limit of a million, costs nothing without close_range(2)."""
    try:
        return max(int(name) for name in os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        return limit - 1


def _address_space() -> int:
    """The process's current virtual size in bytes (the memory limit is on top of it)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
