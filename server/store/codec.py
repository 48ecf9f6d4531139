"""Value conversions shared by both backends: UTC timestamps, safe JSON and text, page cursors."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .base import InvalidCursor

_SEPARATORS = (",", ":")
# Deeper structures are stored as their repr: it also ends a self-referencing structure.
_MAX_DEPTH = 64


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def ts_text(moment: datetime) -> str:
    """Fixed-width RFC 3339 text in UTC with microseconds, so text order is time order (SQLite)."""
    return utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def ts_parse(text: str) -> datetime:
    """The aware UTC datetime of `ts_text` output."""
    return datetime.fromisoformat(text).astimezone(UTC)


def clean_text(text: str) -> str:
    """`text` without NUL characters (PostgreSQL refuses them) or lone surrogates (UTF-8 cannot hold them)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def dump_json(value: Any) -> str | None:
    """Standard JSON text for any value, or None for None; never raises.

    One odd value must not make a whole batch fail forever, so anything JSON cannot hold is
    converted: unknown types become their str(), NaN and infinities null, NUL and lone
    surrogates are replaced, non-string keys become strings.
    """
    if value is None:
        return None
    return _quick_json(value) or json.dumps(_clean(value, 0), separators=_SEPARATORS)


def dump_json_array(items: Sequence[Any]) -> str:
    """`dump_json` of a list, cleaning item by item only when the whole does not encode as it is."""
    return _quick_json(items) or "[" + ",".join([dump_json(item) or "null" for item in items]) + "]"


def _quick_json(value: Any) -> str | None:
    """The JSON text of `value` when it needs no cleaning, else None."""
    try:
        text = _encode(value)
    except Exception:  # NaN, a circular reference, a tuple key
        return None
    # Escaped NUL or surrogate (also a valid pair, rarely): the caller takes the slow, careful path.
    if "\\u0000" in text or "\\ud" in text:
        return None
    return text


def load_json(text: str | None) -> Any:
    """The value of `dump_json` text (None stays None)."""
    return None if text is None else json.loads(text)


def _clean(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value)
    if depth < _MAX_DEPTH and isinstance(value, Mapping):
        return {clean_text(k if isinstance(k, str) else _str(k)): _clean(v, depth + 1) for k, v in value.items()}
    if depth < _MAX_DEPTH and isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value]
    return clean_text(_str(value))


def _encoder() -> Callable[[Any], str]:
    # json.dumps with any non-default option builds a new encoder per call, which costs more than
    # encoding a small value: build the C encoder once. Without circular-reference markers (an
    # exception would leave shared ones dirty) a self-referencing value ends in RecursionError.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(default=_str, allow_nan=False, separators=_SEPARATORS).encode
    encode = make(None, _str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
    return lambda value: "".join(encode(value, 0))


def _str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__, or a structure too deep for repr
        return f"<unprintable {type(value).__name__}>"


_encode = _encoder()


def encode_cursor(started_at: datetime, id: str) -> str:
    """An opaque cursor naming the last row of a page (keyset pagination)."""
    raw = f"{ts_text(started_at)}|{id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (started_at, id) of `encode_cursor`; InvalidCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, id = raw.partition("|")
        if not sep or not id:
            raise ValueError("no separator")
        return ts_parse(at), id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(f"invalid cursor {cursor[:80]!r}") from None
