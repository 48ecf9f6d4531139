"""One placeholder syntax for both drivers: `:name` with a params mapping, `?` with a params list.

The query is scanned once, at config load. Placeholders inside string literals, quoted identifiers,
comments and dollar-quoted bodies are text; `::` (a PostgreSQL cast) is never a placeholder. Each driver
then gets positional SQL: `?` for sqlite3, `%s` for psycopg2, with every literal `%` doubled for psycopg2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_TOKENS = re.compile(
    r"""
      (?P<text>(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*'       # E'...' (backslash escapes)
             | '(?:[^']|'')*'                            # '...'
             | "(?:[^"]|"")*"                            # "quoted identifier"
             | --[^\n]*                                  # line comment
             | /\*.*?\*/                                 # block comment
             | (?<![\w$])\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$   # $tag$ ... $tag$
             | ::)                                       # a cast, not a placeholder
    | (?P<open>['"]|/\*|(?<![\w$])\$(?:[A-Za-z_]\w*)?\$)  # any of those left unterminated
    | (?P<named>(?<![\w:]):[A-Za-z_]\w*)
    | (?P<positional>\?)
    | (?P<numbered>(?<![\w$])\$\d+)
""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Statement:
    """A query ready for both drivers, and how to turn rendered params into its positional arguments."""

    sqlite: str
    postgres: str
    names: tuple[str, ...] | None = None  # the named placeholders in order (None: positional)
    count: int = 0

    def text(self, driver: str) -> str:
        """The SQL for `driver`."""
        return self.postgres if driver == "postgres" else self.sqlite

    def arguments(self, params: Any) -> tuple[Any, ...]:
        """Rendered params as positional arguments, in placeholder order."""
        if self.names is None:
            return tuple(params or ())
        return tuple(params[name] for name in self.names)


def compile_statement(query: str, params: Any) -> Statement:
    """Check `query` against the shape of `params` (None, a list or a mapping); ValueError names the problem."""
    if params is not None and not isinstance(params, (list, tuple, Mapping)):
        raise ValueError("params must be a list (for ? placeholders) or a mapping (for :name placeholders)")
    named = isinstance(params, Mapping)
    sqlite: list[str] = []
    postgres: list[str] = []
    names: list[str] = []
    count, end = 0, 0
    for match in _TOKENS.finditer(query):
        kind, token = match.lastgroup, match.group(0)
        placeholder = (kind == "named" and named) or (kind == "positional" and not named)
        if kind == "open":
            what = {"'": "string literal", '"': "quoted identifier", "/*": "comment"}.get(token, "dollar-quoted string")
            raise ValueError(f"unterminated {what} at character {match.start() + 1} of the query")
        if kind == "numbered":
            raise ValueError(f"{token}: placeholders are ? (with a params list) or :name (with a params mapping)")
        if kind == "named" and not named:
            raise ValueError(f"{token}: named placeholders need params as a mapping")
        before = query[end : match.start()] + ("" if placeholder else token)
        sqlite.append(before)
        postgres.append(before.replace("%", "%%"))
        end = match.end()
        if placeholder:
            sqlite.append("?")
            postgres.append("%s")
            count += 1
            if named:
                names.append(token[1:])
    rest = query[end:]
    sqlite.append(rest)
    postgres.append(rest.replace("%", "%%"))
    _check(params, named, count, names)
    return Statement("".join(sqlite), "".join(postgres), tuple(names) if named else None, count)


def _check(params: Any, named: bool, count: int, names: Sequence[str]) -> None:
    if named:
        keys = [str(k) for k in params]
        missing = [n for n in dict.fromkeys(names) if n not in params]
        unused = [k for k in keys if k not in names]
        if missing:
            raise ValueError(f"params has no value for {', '.join(':' + n for n in missing)}")
        if unused:
            raise ValueError(f"params {', '.join(map(repr, unused))} not used by the query")
        return
    given = len(params or ())
    if given != count:
        raise ValueError(f"the query has {count} ? placeholder(s) but params has {given} value(s)")
