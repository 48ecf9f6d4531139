"""Go-style durations (`30s`, `1m30s`, `250ms`, `1h`) as seconds."""

from __future__ import annotations

import math
import re

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_BARE = re.compile(_NUMBER)
_PART = re.compile(rf"({_NUMBER})(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`: a Go duration string, or a bare number of seconds; must be positive."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        # None, lists and mappings come straight from YAML; they must be a config error, not a crash.
        raise ValueError(f"{value!r} is not a duration like '30s' or '1m30s'")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int too big for a float is as unusable as infinity
            seconds = math.inf
    else:
        text = value.strip()
        if not text:
            raise ValueError("empty duration")
        if _BARE.fullmatch(text):
            seconds = float(text)  # a bare number of seconds, as `${TIMEOUT}` expands to a string
        else:
            pos, seconds = 0, 0.0
            while pos < len(text):
                match = _PART.match(text, pos)
                if not match:
                    raise ValueError(f"{value!r} is not a duration like '30s' or '1m30s'")
                seconds += float(match.group(1)) * _UNIT[match.group(2)]
                pos = match.end()
    if not math.isfinite(seconds):  # YAML's .inf and .nan, or digits enough to overflow
        raise ValueError(f"{value!r}: a duration must be a finite number of seconds")
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be positive")
    return seconds
