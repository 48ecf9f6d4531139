"""Atomic file writes for the components folder (blocking: run them in a thread)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_temp(path: Path, text: str) -> Path:
    """Write `text` to a hidden temp file next to `path` (which the watcher ignores) and return it.

    Renaming it over `path` (`os.replace`) then swaps the content in one step, so a reader or the
    watcher never sees a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:  # a full disk: no half-written temp file stays behind
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step (a temp file renamed over it); nothing is left behind on failure."""
    temp = write_temp(path, text)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def unlink(path: Path) -> None:
    """Remove a file if it is there."""
    path.unlink(missing_ok=True)
