"""Untrusted JSON: bounded nesting, finite numbers, and messages in the client's terms, never Python's."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

DEFAULT_MAX_DEPTH = 64

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_TO_PARENS = bytes.maketrans(b"[{]}", b"(())")


class JSONBodyError(ValueError):
    """A JSON text the server refuses; the message is meant for the client."""


def loads(raw: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse `raw` as JSON; refuse nesting deeper than `max_depth`, NaN, Infinity and numbers out of range."""
    data = raw.encode() if isinstance(raw, str) else raw
    encoding = json.detect_encoding(data)
    try:
        text = data.decode(encoding, "surrogatepass")
    except UnicodeDecodeError:
        raise JSONBodyError("not valid JSON: the text is not UTF-8") from None
    if encoding not in ("utf-8", "utf-8-sig"):
        # The depth scan reads UTF-8 bytes: in UTF-16 or UTF-32 a character's bytes can look like brackets.
        data = text.encode("utf-8", "surrogatepass")
    if depth_exceeds(data, max_depth):
        raise JSONBodyError(f"JSON nested deeper than the limit of {max_depth} levels (WORKFLOW_MAX_JSON_DEPTH)")
    try:
        return _DECODER.decode(text)
    except JSONBodyError:
        raise
    except RecursionError:  # the depth check ran first; this is a safety net, not the rule
        raise JSONBodyError(f"JSON nested deeper than the limit of {max_depth} levels") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's own int limit; its hint is for programmers
            limit = sys.get_int_max_str_digits()
            raise JSONBodyError(f"a number has more than {limit} digits") from None
        raise JSONBodyError(f"not valid JSON: {_plain(exc)}") from None


def depth_exceeds(data: bytes, limit: int) -> bool:
    """Whether the arrays and objects in `data` nest deeper than `limit` (computed without recursion)."""
    if data.count(b"[") + data.count(b"{") <= limit:  # the usual case costs two C scans
        return False
    # Brackets inside strings nest nothing. Escapes go first (an escaped backslash, then an escaped quote), so
    # every quote left opens or closes a string; the pieces between pairs of quotes are outside strings.
    # All of it is bytes methods, in C: a megabyte takes milliseconds.
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # `""` is the end of one string and the start of the next, or an empty one: dropping it keeps the pairing,
    # and leaves quotes only around the (rare) strings that hold brackets.
    structure = unescaped.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    brackets = structure.translate(_TO_PARENS)
    # Each pass removes every innermost pair, so the number of passes is the depth.
    for _ in range(limit):
        if b"()" not in brackets:
            return False
        brackets = brackets.replace(b"()", b"")
    return b"()" in brackets


def kind(value: Any) -> str:
    """The JSON name of a value's type, with its article: 'an array', 'a string', 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a value of another kind"


def _refuse_constant(name: str) -> Any:
    raise JSONBodyError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONBodyError(f"the number {text[:32]} is out of range")
    return value


# One decoder, built once: json.loads with any option builds a new decoder and scanner on every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _plain(exc: ValueError) -> str:
    """json's message without the character offset (line and column are enough for a person)."""
    return re.sub(r" \(char \d+\)$", "", str(exc))
