"""Random UUID4 strings, cheaply: one `os.urandom` call serves many ids."""

from __future__ import annotations

import os

_BATCH = 256
_pool = b""
_offset = 0


def new_id() -> str:
    """A random version-4 UUID in canonical text form, from the OS's secure random source."""
    global _pool, _offset
    if _offset >= len(_pool):
        _pool, _offset = os.urandom(16 * _BATCH), 0
    raw = int.from_bytes(_pool[_offset:_offset + 16], "big")
    _offset += 16
    # Set the version (4) and the RFC 4122 variant bits, as uuid.uuid4() does.
    raw = (raw & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    text = f"{raw:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
