"""Say where a thread is: its innermost frames, and the innermost one outside the libraries."""

from __future__ import annotations

import sys
import sysconfig
from types import FrameType

STACK_FRAMES = 12  # innermost frames kept: enough to see a component's call into the blocking library

# Files of the standard library and installed packages: where blocking code waits, rarely who called it.
_LIBRARY_PREFIXES = tuple({sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")})


def thread_frame(ident: int) -> FrameType | None:
    """The frame thread `ident` is running now, if it is alive."""
    return sys._current_frames().get(ident)


def describe(frame: FrameType, limit: int = STACK_FRAMES) -> tuple[str, ...]:
    """`file:line in function` for the innermost `limit` frames, innermost last."""
    lines: list[str] = []
    current: FrameType | None = frame
    while current is not None and len(lines) < limit:
        lines.append(where(current))
        current = current.f_back
    return tuple(reversed(lines))


def culprit(frame: FrameType) -> str:
    """The innermost frame outside the standard library and installed packages (a component's, usually)."""
    current: FrameType | None = frame
    while current is not None:
        if not current.f_code.co_filename.startswith(_LIBRARY_PREFIXES):
            return where(current)
        current = current.f_back
    return where(frame)


def where(frame: FrameType) -> str:
    """One frame as `file:line in function`."""
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
