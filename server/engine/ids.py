"""UUID strings, cheaply: one `os.urandom` call and one list comprehension serve many ids.

Execution ids are time-ordered UUIDv7 (48 bits of Unix milliseconds, then 74 random bits; CONTRACT §4), so
the rows a busy server records land at the end of the store's indexes instead of all over them. Request
ids stay random UUID4.
"""

from __future__ import annotations

import os
import time

_BATCH = 256
# The RFC 9562 variant: the top two bits of the 17th hex digit are 10, so that digit is 8, 9, a or b.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_ids: list[str] = []
_tails: list[str] = []
_prefix: list[object] = [-1, ""]  # [millisecond, "tttttttt-tttt-7"] of the latest execution id


def _batch() -> list[str]:
    """_BATCH new ids; formatting them in one comprehension costs about half of one call per id."""
    h = os.urandom(16 * _BATCH).hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-{_VARIANT[h[i + 16]]}{h[i + 17 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * _BATCH, 32)
    ]


def _tail_batch() -> list[str]:
    """_BATCH random ends of a UUIDv7, `rrr-vrrr-rrrrrrrrrrrr`: 12 + 2 + 12 + 48 = 74 random bits."""
    h = os.urandom(10 * _BATCH).hex()
    return [
        f"{h[i : i + 3]}-{_VARIANT[h[i + 3]]}{h[i + 4 : i + 7]}-{h[i + 7 : i + 19]}" for i in range(0, 20 * _BATCH, 20)
    ]


def new_id() -> str:
    """A random version-4 UUID in canonical text form, from the OS's secure random source."""
    global _ids
    if not _ids:
        _ids = _batch()
    return _ids.pop()


def new_execution_id() -> str:
    """A version-7 UUID: the current Unix time in milliseconds, then 74 bits from the OS's secure random source."""
    global _tails
    if not _tails:
        _tails = _tail_batch()
    ms = time.time_ns() // 1_000_000
    prefix = _prefix
    if ms != prefix[0]:
        prefix[:] = ms, f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
    return f"{prefix[1]}{_tails.pop()}"
